-- Specs for lua/lxmpp/jid.lua and the libidn binding under it (csrc/idn.c).

local compat = require "lxmpp.compat"
local jid = require "lxmpp.jid"
local core = require "lxmpp.core"

local pack = compat.pack

local function rep(s, n) return string.rep(s, n) end

-- Printable form of a test input for the test names.
local function show(v)
  if type(v) ~= "string" then return tostring(v) end
  if #v > 40 then return ("%q... (%d bytes)"):format(v:sub(1, 20), #v) end
  return ("%q"):format(v)
end

local L63, L64 = rep("a", 63), rep("a", 64)
local DOMAIN_253 = table.concat({ L63, L63, L63, rep("a", 61) }, ".")
local DOMAIN_254 = table.concat({ L63, L63, L63, rep("a", 62) }, ".")
local DOMAIN_1023 = rep("a.", 511) .. "a"   -- structurally fine, too long for DNS
local DOMAIN_1024 = rep("a.", 511) .. "ab"
local HALF = "\194\189"                      -- "½", 2 bytes; Nodeprep/Resourceprep: "1⁄2", 5 bytes
local HALF_PREPPED = "1\226\129\1322"

describe("lxmpp.jid", function()

  describe("split", function()
    -- input, node, domain, resource
    local valid = {
      { "example.com", nil, "example.com", nil },
      { "user@example.com", "user", "example.com", nil },
      { "user@example.com/res", "user", "example.com", "res" },
      { "example.com/res", nil, "example.com", "res" },
      { "user@example.com/r@x/y", "user", "example.com", "r@x/y" },
      { "example.com/a/b", nil, "example.com", "a/b" },
      { "example.com/@", nil, "example.com", "@" },
      { "example.com//", nil, "example.com", "/" },
      { "a/b@c", nil, "a", "b@c" },          -- '@' after the first '/' is in the resource
      { "User@Example.COM/Res", "User", "Example.COM", "Res" }, -- structural: no case folding
      { "user@example.com.", "user", "example.com.", nil },  -- structural: the dot is kept
      { "[::1]", nil, "[::1]", nil },
      { "u@[2001:db8::1]/r", "u", "[2001:db8::1]", "r" },
      { "u@192.0.2.1", "u", "192.0.2.1", nil },
      { "ñ@bücher.example/ü", "ñ", "bücher.example", "ü" },
      { rep("n", 1023) .. "@d", rep("n", 1023), "d", nil },
      { "d/" .. rep("r", 1023), nil, "d", rep("r", 1023) },
      { DOMAIN_1023, nil, DOMAIN_1023, nil },
    }
    for _, row in ipairs(valid) do
      it("splits " .. show(row[1]), function()
        local r = pack(jid.split(row[1]))
        assert.are.equal(3, r.n)
        assert.are.equal(row[2], r[1])
        assert.are.equal(row[3], r[2])
        assert.are.equal(row[4], r[3])
      end)
    end

    -- input, why
    local invalid = {
      { "", "empty" },
      { "@", "empty node and domain" },
      { "@example.com", "empty node" },
      { "user@", "empty domain" },
      { "user@/res", "empty domain" },
      { "/res", "empty domain" },
      { "/", "empty domain and resource" },
      { "example.com/", "empty resource" },
      { "user@example.com/", "empty resource" },
      { "a@b@c", "'@' in the domain" },
      { "a@b@c/r", "'@' in the domain" },
      { "@/", "all empty" },
      { ".", "domain is only the root" },
      { "u@.", "domain is only the root" },
      { "a..b", "empty label" },
      { ".a", "empty leading label" },
      { "a.b..", "empty label before the root" },
      { "example.com\0", "NUL byte" },
      { "us\0er@example.com", "NUL byte in node" },
      { "user@example.com/r\0", "NUL byte in resource" },
      { "us\ter@example.com", "control character" },
      { "user@example.com/r\n", "control character in resource" },
      { "user@example.com/r\127", "DEL" },
      { "\255@example.com", "invalid UTF-8" },
      { "user@example.com/\195", "truncated UTF-8" },
      { "\192\175@example.com", "overlong UTF-8" },
      { "user@\237\160\128", "UTF-16 surrogate" },
      { "user@d/\244\144\128\128", "above U+10FFFF" },
      { rep("n", 1024) .. "@d", "1024-byte node" },
      { "d/" .. rep("r", 1024), "1024-byte resource" },
      { DOMAIN_1024, "1024-byte domain" },
    }
    for _, row in ipairs(invalid) do
      it("rejects " .. show(row[1]) .. " (" .. row[2] .. ") as a whole", function()
        local r = pack(jid.split(row[1]))
        assert.are.equal(1, r.n)
        assert.is_nil(r[1])
        assert.is_nil(jid.bare(row[1]))
        assert.is_nil(jid.node(row[1]))
        assert.is_nil(jid.domain(row[1]))
        assert.is_nil(jid.resource(row[1]))
      end)
    end
  end)

  describe("bare, node, domain, resource", function()
    -- input, bare, node, domain, resource
    local rows = {
      { "example.com", "example.com", nil, "example.com", nil },
      { "user@example.com", "user@example.com", "user", "example.com", nil },
      { "user@example.com/res", "user@example.com", "user", "example.com", "res" },
      { "example.com/res", "example.com", nil, "example.com", "res" },
      { "user@example.com/a@b/c", "user@example.com", "user", "example.com", "a@b/c" },
    }
    for _, row in ipairs(rows) do
      it("takes apart " .. show(row[1]), function()
        assert.are.equal(row[2], jid.bare(row[1]))
        assert.are.equal(row[3], jid.node(row[1]))
        assert.are.equal(row[4], jid.domain(row[1]))
        assert.are.equal(row[5], jid.resource(row[1]))
      end)
    end
  end)

  describe("join", function()
    -- node, domain, resource, expected
    local valid = {
      { nil, "example.com", nil, "example.com" },
      { "user", "example.com", nil, "user@example.com" },
      { "user", "example.com", "res", "user@example.com/res" },
      { nil, "example.com", "res", "example.com/res" },
      { "user", "example.com", "r/s@t", "user@example.com/r/s@t" },
    }
    for _, row in ipairs(valid) do
      it("joins " .. show(row[4]), function()
        assert.are.equal(row[4], jid.join(row[1], row[2], row[3]))
        local n, d, r = jid.split(row[4])
        assert.are.same({ row[1], row[2], row[3] }, { n, d, r })
      end)
    end

    -- node, domain, resource, why
    local invalid = {
      { "", "example.com", nil, "empty node" },
      { "user", "example.com", "", "empty resource" },
      { nil, "", nil, "empty domain" },
      { "a@b", "example.com", nil, "'@' in the node" },
      { "a/b", "example.com", nil, "'/' in the node" },
      { "user", "b/c", nil, "'/' in the domain" },
      { "user", "b@c", nil, "'@' in the domain" },
      { nil, "a..b", nil, "empty label" },
      { "us\0er", "example.com", nil, "NUL byte" },
      { rep("n", 1024), "example.com", nil, "1024-byte node" },
      { nil, "example.com", "\255", "invalid UTF-8" },
    }
    for _, row in ipairs(invalid) do
      it("refuses parts with " .. row[4], function()
        local s, err = jid.join(row[1], row[2], row[3])
        assert.is_nil(s)
        assert.is_string(err)
      end)
    end
  end)

  describe("prep", function()
    -- input, normalized
    local valid = {
      { "example.com", "example.com" },
      { "Juliet@Example.COM/Balcony", "juliet@example.com/Balcony" },
      { "ROMEO@MONTAGUE.LIT", "romeo@montague.lit" },
      { "user@example.com/MiXeD Case", "user@example.com/MiXeD Case" },
      { "Straße@example.de", "strasse@example.de" },            -- case folding B.2
      { "user@Bücher.example", "user@bücher.example" },        -- IDN, lowercased
      { "BÜCHER.EXAMPLE", "bücher.example" },
      { "user@xn--bcher-kva.example", "user@bücher.example" }, -- A-label to U-label
      { "XN--BCHER-KVA.EXAMPLE", "bücher.example" },
      { "ＵＳＥＲ@ｅｘａｍｐｌｅ.com", "user@example.com" },     -- fullwidth: NFKC
      { "\239\172\128@example.com", "ff@example.com" },            -- ligature: NFKC
      { "user@\227\142\146.example", "user@mhz.example" },          -- "㎒": NFKC + folding
      { "a@x/U\204\136", "a@x/\195\156" },                        -- NFKC composes, case kept
      { "us\194\173er@example.com", "user@example.com" },        -- soft hyphen mapped out
      { "user@example.com.", "user@example.com" },             -- trailing dot dropped
      { "example.com./r", "example.com/r" },
      { "user@example\227\128\130com", "user@example.com" },        -- ideographic full stop
      { "user@example\239\188\142com.", "user@example.com" },       -- fullwidth full stop
      { "user@example\239\189\161com", "user@example.com" },        -- halfwidth ideographic
      { "[::1]", "[::1]" },
      { "u@[2001:DB8::1]/r", "u@[2001:db8::1]/r" },             -- IP literal lowercased
      { "[1:2:3:4:5:6:7:8]", "[1:2:3:4:5:6:7:8]" },
      { "[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]" },
      { "[fe80::]", "[fe80::]" },
      { "192.0.2.1", "192.0.2.1" },
      { "u@0.0.0.0/r", "u@0.0.0.0/r" },
      { "u@1a.example", "u@1a.example" },
      { "a@b/\240\159\152\128", "a@b/\240\159\152\128" },                    -- unassigned in 3.2: a query
      { "xn--ls8h.la", "\240\159\146\169.la" },
      { "a@b/r@x/y", "a@b/r@x/y" },
      { rep("N", 1023) .. "@d", rep("n", 1023) .. "@d" },        -- 1023-byte parts
      { "d/" .. rep("R", 1023), "d/" .. rep("R", 1023) },
      { "u@" .. DOMAIN_253, "u@" .. DOMAIN_253 },                -- 253 ASCII bytes
      { L63 .. ".example", L63 .. ".example" },                  -- 63-byte label
      { rep(HALF, 204) .. "abc@d", rep(HALF_PREPPED, 204) .. "abc@d" }, -- prepared: 1023
      { "d/" .. rep(HALF, 204) .. "abc", "d/" .. rep(HALF_PREPPED, 204) .. "abc" },
    }
    for _, row in ipairs(valid) do
      it("normalizes " .. show(row[1]), function()
        local r = pack(jid.prep(row[1]))
        assert.are.equal(1, r.n)
        assert.are.equal(row[2], r[1])
      end)
      it("is idempotent and consistent with prepped_split for " .. show(row[1]), function()
        assert.are.equal(row[2], jid.prep(row[2]))
        local n, d, r = jid.prepped_split(row[1])
        assert.are.same({ jid.split(row[2]) }, { n, d, r })
      end)
      it("gives the same result or nil when strict for " .. show(row[1]), function()
        local strict = jid.prep(row[1], true)
        assert.is_true(strict == nil or strict == row[2])
      end)
    end

    -- input, message pattern, why
    local invalid = {
      { "", "empty", "empty" },
      { "@example.com", "empty localpart", "empty node" },
      { "user@", "empty domainpart", "empty domain" },
      { "example.com/", "empty resourcepart", "empty resource" },
      { "\194\173@example.com", "empty localpart", "node empty once prepared" },
      { "a@b/\226\128\139", "empty resourcepart", "resource empty once prepared" },
      { "\194\173", "domainpart", "domain empty once prepared" },
      { ".", "domainpart", "only the root" },
      { "example.com..", "empty label", "two trailing dots" },
      { 'a"b@example.com', "localpart", "prohibited '\"' in node" },
      { "a&b@example.com", "localpart", "prohibited '&' in node" },
      { "a'b@example.com", "localpart", "prohibited \"'\" in node" },
      { "a:b@example.com", "localpart", "prohibited ':' in node" },
      { "a<b@example.com", "localpart", "prohibited '<' in node" },
      { "a>b@example.com", "localpart", "prohibited '>' in node" },
      { "a b@example.com", "localpart", "prohibited space in node" },
      { "a\239\188\160b@example.com", "localpart", "fullwidth '@' maps to a prohibited '@'" },
      { "a\239\188\143b@example.com", "localpart", "fullwidth '/' maps to a prohibited '/'" },
      { "a\194\160b@example.com", "localpart", "non-ASCII space in node" },
      { "\238\128\128@example.com", "localpart", "private use in node" },
      { "a@b/\238\128\128", "resourcepart", "private use in resource" },
      { "a@b/\239\191\189", "resourcepart", "replacement character in resource" },
      { "\215\144a@example.com", "localpart", "mixed bidi in node" },
      { "exa mple.com", "domainpart", "space in domain" },
      { "a_b.example", "domainpart", "underscore in domain" },
      { "<x>.example", "domainpart", "'<' in domain" },
      { "-a.example", "domainpart", "leading hyphen" },
      { "a-.example", "domainpart", "trailing hyphen" },
      { "a\239\188\143b.example", "domainpart", "fullwidth '/' in domain" },
      { "a\226\128\164.example", "domainpart", "one dot leader maps to '.', making an empty label" },
      { "xn--zzzz.example", "domainpart", "bogus A-label" },
      { "xn--a.example", "domainpart", "bogus A-label" },
      { "xn--\195\188.example", "domainpart", "ACE prefix on a Unicode label" },
      { "[::1", "IP literal", "unclosed IP literal" },
      { "[]", "IP literal", "empty IP literal" },
      { "[1.2.3.4]", "IP literal", "IPv4 in brackets" },
      { "[1:2:3:4:5:6:7:8:9]", "IP literal", "nine groups" },
      { "[1:2:3:4:5:6:7]", "IP literal", "seven groups without '::'" },
      { "[::1::]", "IP literal", "two '::'" },
      { ":::1", "domainpart", "':' in a domain" },
      { "[:::1]", "IP literal", "':::'" },
      { "[12345::1]", "IP literal", "five hex digits" },
      { "[gg::1]", "IP literal", "not hex" },
      { "[::1%eth0]", "IP literal", "zone identifier" },
      { "[::1]x", "IP literal", "text after the literal" },
      { "256.1.1.1", "IPv4", "octet above 255" },
      { "010.0.0.1", "IPv4", "leading zero" },
      { "1.2.3", "IPv4", "three octets" },
      { "123", "IPv4", "all-numeric domain" },
      { "a.123", "IPv4", "all-numeric top-level label" },
      { "\239\188\145.2.3.4.5", "IPv4", "fullwidth digits make five octets" },
      { "a@b/\240\159\152\128", nil, "strict: unassigned code point in resource", true },
      { "\240\159\152\128@example.com", nil, "strict: unassigned code point in node", true },
      { "xn--ls8h.la", nil, "strict: unassigned code point in domain", true },
      { rep("n", 1024) .. "@d", "", "1024-byte node" },
      { "d/" .. rep("r", 1024), "", "1024-byte resource" },
      { DOMAIN_1023, "too long", "1023-byte domain is too long for DNS" },
      { "u@" .. DOMAIN_254, "too long", "254 ASCII bytes" },
      { L64 .. ".example", "domainpart", "64-byte label" },
      { rep(HALF, 204) .. "abcd@d", "localpart too long", "node of 1024 bytes once prepared" },
      { "d/" .. rep(HALF, 204) .. "abcd", "resourcepart too long", "resource of 1024 bytes once prepared" },
      { "d/" .. rep("\239\183\186", 341), "resourcepart", "resource expanding past any buffer" },
      { "\255@example.com", "", "invalid UTF-8" },
      { "user@example.com/\192\128", "", "overlong NUL" },
      { "us\0er@example.com", "", "NUL byte" },
    }
    for _, row in ipairs(invalid) do
      it("refuses " .. show(row[1]) .. " (" .. row[3] .. ")", function()
        local r = pack(jid.prep(row[1], row[4]))
        assert.are.equal(2, r.n)
        assert.is_nil(r[1])
        assert.is_string(r[2])
        if row[2] then assert.truthy(r[2]:find(row[2], 1, true), r[2]) end
        assert.is_nil(jid.prepped_split(row[1], row[4]))
      end)
    end
  end)

  describe("equal", function()
    -- a, b, expected
    local rows = {
      { "Juliet@Example.COM/Balcony", "juliet@example.com/Balcony", true },
      { "juliet@example.com/Balcony", "juliet@example.com/balcony", false },
      { "user@Bücher.example", "user@xn--bcher-kva.example", true },
      { "ＵＳＥＲ@ｅｘａｍｐｌｅ.com", "user@example.com", true },
      { "user@example.com.", "user@example.com", true },
      { "user@example\227\128\130com", "user@example.com", true },
      { "Straße@example.de", "STRASSE@example.de", true },
      { "a@example.com", "b@example.com", false },
      { "a@example.com", "a@example.org", false },
      { "a@example.com", "a@example.com/r", false },
      { "[::1]", "[::1]", true },
      { "a@b", "a@b/", false },              -- one invalid
      { "a@b/", "a@b/", false },             -- both invalid, even identical
      { "", "", false },
      { "a b@c", "a b@c", false },
    }
    for _, row in ipairs(rows) do
      it(("compares %s and %s"):format(show(row[1]), show(row[2])), function()
        assert.are.equal(row[3], jid.equal(row[1], row[2]))
        assert.are.equal(row[3], jid.equal(row[2], row[1]))
      end)
    end
  end)

  describe("misuse", function()
    -- function name, arguments
    local rows = {
      { "split", {} },
      { "split", { 42 } },
      { "split", { {} } },
      { "bare", { nil } },
      { "node", { true } },
      { "domain", { 1 } },
      { "resource", { false } },
      { "join", { "n", nil, "r" } },
      { "join", { 1, "d" } },
      { "join", { nil, "d", {} } },
      { "prep", { nil } },
      { "prep", { "a@b", "yes" } },
      { "prepped_split", { 7 } },
      { "equal", { "a@b", nil } },
      { "equal", { nil, "a@b" } },
    }
    for i, row in ipairs(rows) do
      it(("raises for %s with a bad argument (%d)"):format(row[1], i), function()
        local args = row[2]
        assert.has_error(function() jid[row[1]](args[1], args[2], args[3]) end)
      end)
    end

    it("names the function and argument in the error", function()
      local ok, err = pcall(jid.split, nil)
      assert.is_false(ok)
      assert.truthy(err:find("bad argument #1 to 'split'", 1, true), err)
    end)
  end)

  it("writes no globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    package.loaded["lxmpp.jid"] = nil
    local fresh = require "lxmpp.jid"
    fresh.prep("Juliet@Example.COM/Balcony")
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
  end)
end)

describe("lxmpp.core IDN bindings", function()
  -- function, input, strict, expected (nil: refused)
  local rows = {
    { "nodeprep", "Foo", nil, "foo" },
    { "nodeprep", "Straße", nil, "strasse" },
    { "nodeprep", "a@b", nil, nil },
    { "nodeprep", "a/b", nil, nil },
    { "nodeprep", "\194\173", nil, "" },
    { "nodeprep", "\240\159\152\128", nil, "\240\159\152\128" },
    { "nodeprep", "\240\159\152\128", true, nil },
    { "nodeprep", "\240\159\152\128", false, "\240\159\152\128" },
    { "resourceprep", "Foo Bar", nil, "Foo Bar" },
    { "resourceprep", "a@b/c", nil, "a@b/c" },
    { "resourceprep", "\240\159\152\128", true, nil },
    { "resourceprep", rep("\239\183\186", 341), nil, nil },   -- expands past the work buffer
    { "nameprep", "EXAMPLE.com", nil, "example.com" },
    { "nameprep", "Bücher.example", nil, "bücher.example" },
    { "nameprep", "ｅｘａｍｐｌｅ", nil, "example" },
    { "to_ascii", "bücher.example", nil, "xn--bcher-kva.example" },
    { "to_ascii", "example\227\128\130com", nil, "example.com" },
    { "to_ascii", L63, nil, L63 },
    { "to_ascii", L64, nil, nil },
    { "to_ascii", "a..b", nil, nil },
    { "to_ascii", "example.com.", nil, nil },
    { "to_ascii", "", nil, nil },
    { "to_ascii", "a_b", nil, nil },
    { "to_ascii", "a b", nil, nil },
    { "to_ascii", "-a", nil, nil },
    { "to_ascii", "\240\159\146\169.la", nil, "xn--ls8h.la" },
    { "to_ascii", "\240\159\146\169.la", true, nil },
    { "to_unicode", "xn--bcher-kva.example", nil, "bücher.example" },
    { "to_unicode", "plain.example", nil, "plain.example" },
    { "to_unicode", "xn--ls8h.la", nil, "\240\159\146\169.la" },
    { "to_unicode", "xn--ls8h.la", true, nil },
    { "to_unicode", "xn--zzzz.example", nil, nil },
    { "to_unicode", "a..b", nil, nil },
  }
  for _, fname in ipairs { "nodeprep", "nameprep", "resourceprep", "to_ascii", "to_unicode" } do
    local max_ok = rep("a", 1023)
    if fname == "to_ascii" then max_ok = nil end                  -- a 1023-byte label
    rows[#rows + 1] = { fname, rep("a", 1023), nil, max_ok }
    rows[#rows + 1] = { fname, rep("a", 1024), nil, nil }        -- over the input cap
    rows[#rows + 1] = { fname, "a\0b", nil, nil }                -- NUL byte
    rows[#rows + 1] = { fname, "a\255b", nil, nil }              -- invalid UTF-8
    rows[#rows + 1] = { fname, "a\237\160\128b", nil, nil }      -- surrogate
    rows[#rows + 1] = { fname, "a\192\128b", nil, nil }          -- overlong NUL
    rows[#rows + 1] = { fname, "a\244\144\128\128", nil, nil }   -- above U+10FFFF
    rows[#rows + 1] = { fname, "a\226\130", nil, nil }           -- truncated sequence
  end
  for _, row in ipairs(rows) do
    it(("%s(%s%s)"):format(row[1], show(row[2]), row[3] ~= nil and ", " .. tostring(row[3]) or ""), function()
      local r = pack(core[row[1]](row[2], row[3]))
      if row[4] == nil then
        assert.are.equal(2, r.n)
        assert.is_nil(r[1])
        assert.is_string(r[2])
      else
        assert.are.equal(1, r.n)
        assert.are.equal(row[4], r[1])
      end
    end)
  end

  for _, fname in ipairs { "nodeprep", "nameprep", "resourceprep", "to_ascii", "to_unicode" } do
    it(fname .. " raises for a non-string or a non-boolean strict flag", function()
      assert.has_error(function() core[fname](nil) end)
      assert.has_error(function() core[fname](12) end)
      assert.has_error(function() core[fname]("a", "yes") end)
    end)
  end
end)
