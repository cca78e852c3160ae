-- Specs for lxmpp.stanza (lua/lxmpp/stanza.lua).
--
-- Tests tagged #core check behaviour that lives in the C core (lxmpp.core:
-- the validators, the serializer behind tostring, the parser behind
-- st.parse); the rest check the Lua layer's structure and semantics. Run
-- only one group with `busted --tags=core` or `--exclude-tags=core`. Every
-- test needs lxmpp.core to be loadable, since lxmpp.stanza requires it.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"

local xmlns_stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"

--- Helpers -----------------------------------------------------------------

-- The error a call raises (fails the test if it does not raise).
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- An element's children with adjacent strings merged and empty ones dropped:
-- XML cannot tell "a", "b" from "ab".
local function normalized_children(el)
  local out = {}
  for i = 1, #el do
    local c = el[i]
    if type(c) == "string" then
      if c ~= "" then
        if type(out[#out]) == "string" then
          out[#out] = out[#out] .. c
        else
          out[#out + 1] = c
        end
      end
    else
      out[#out + 1] = c
    end
  end
  return out
end

-- Deep comparison of two elements as XML sees them: names, attributes,
-- children in order, and each element's effective namespace (attr.xmlns, or
-- the parent's when absent: a redundant xmlns equal to the parent's is the
-- same document). Builder state (last_add) is ignored. Returns true, or
-- false and where they differ.
local function same_element(a, b, a_ns, b_ns, path)
  path = (path or "") .. "/" .. tostring(a.name)
  if a.name ~= b.name then
    return false, path .. ": name " .. tostring(b.name)
  end
  local ans, bns = a.attr.xmlns, b.attr.xmlns
  if ans == nil then ans = a_ns end
  if bns == nil then bns = b_ns end
  if ans ~= bns then
    return false, path .. ": namespace " .. tostring(ans) .. " vs " .. tostring(bns)
  end
  for k, v in pairs(a.attr) do
    if k ~= "xmlns" and b.attr[k] ~= v then
      return false, path .. ": attribute " .. k .. " " .. ("%q vs %q"):format(v, tostring(b.attr[k]))
    end
  end
  for k, v in pairs(b.attr) do
    if k ~= "xmlns" and a.attr[k] == nil then
      return false, path .. ": extra attribute " .. k .. "=" .. ("%q"):format(v)
    end
  end
  local ac, bc = normalized_children(a), normalized_children(b)
  if #ac ~= #bc then
    return false, path .. (": %d children vs %d"):format(#ac, #bc)
  end
  for i = 1, #ac do
    local x, y = ac[i], bc[i]
    if type(x) ~= type(y) then
      return false, path .. ": child " .. i .. " is " .. type(x) .. " vs " .. type(y)
    elseif type(x) == "string" then
      if x ~= y then
        return false, path .. (": text %q vs %q"):format(x, y)
      end
    else
      local ok, why = same_element(x, y, ans, bns, path)
      if not ok then return false, why end
    end
  end
  return true
end

local function assert_same_element(a, b)
  local ok, why = same_element(a, b)
  assert.is_true(ok, why)
end

-- Every element is a stanza and its tags list is exactly its child elements.
local function assert_well_formed_tree(el)
  assert.is_true(st.is_stanza(el), "element without the stanza metatable")
  assert.is_table(el.attr)
  assert.is_table(el.tags)
  local n = 0
  for i = 1, #el do
    local c = el[i]
    if type(c) == "table" then
      n = n + 1
      assert.equal(c, el.tags[n], "tags out of step with children")
      assert_well_formed_tree(c)
    else
      assert.is_string(c)
    end
  end
  assert.equal(n, #el.tags)
end

-- The five predefined entities and character references.
local entities = { amp = "&", lt = "<", gt = ">", apos = "'", quot = '"' }
local function xml_unescape(s)
  return (s:gsub("&(#?)(x?)(%w+);", function (num, hex, v)
    if num == "" then
      return assert(entities[v], "unknown entity " .. v)
    end
    return compat.utf8_char(tonumber(v, hex == "x" and 16 or 10))
  end))
end

-- Checks that `escaped` is safe character data or attribute content and
-- decodes to `original`.
local function assert_escaped(escaped, original, quote)
  assert.is_nil(escaped:find("<", 1, true), "raw < in output")
  assert.is_nil(escaped:gsub("&#?x?%w+;", ""):find("&", 1, true), "raw & in output")
  assert.is_nil(escaped:find("]]>", 1, true), "raw ]]> in output")
  assert.is_nil(escaped:find("\r", 1, true), "raw CR in output (a parser turns it into LF)")
  if quote then
    assert.is_nil(escaped:find(quote, 1, true), "raw delimiting quote in attribute value")
    assert.is_nil(escaped:find("[\t\n]"), "raw tab/LF in attribute (normalized to space)")
  end
  assert.equal(original, xml_unescape(escaped))
end

-- Quote style of the serializer does not matter to these specs.
local function q(s)
  return (s:gsub('"', "'"))
end

--- Strings the builders must refuse ------------------------------------------

local bad_names = {
  "1a", "a b", "a:b", "", "-a", ".a", "a>", "<a", "a&", "a'", 'a"', "a=b", "a/b",
  "a\0", "\255", "a\195", "stream:stream", "\239\191\190", " a", "a\n",
}

local bad_attr_names = {
  "1a", "a b", "", "a:b", "xmlns:", "xmlns:1a", "xmlns:stream", "xml:", "a=b", "a'", "a>",
  "\255", "a\0", "urn:x\1", "urn:x\1a b", "urn:x\1a:b", "\1a",
}

local bad_texts = {
  ["invalid byte \\xff"] = "\255",
  ["body cut in a 2-byte sequence"] = "caf\195",
  ["lone lead byte"] = "\195",
  ["emoji cut in a 4-byte sequence"] = "smile \240\159\152",
  ["lone continuation byte"] = "a\128b",
  ["NUL"] = "a\0b",
  ["U+0001"] = "\1",
  ["U+001B"] = "esc\27",
  ["vertical tab"] = "\11",
  ["form feed"] = "\12",
  ["U+FFFE"] = "\239\191\190",
  ["U+FFFF"] = "\239\191\191",
  ["surrogate U+D800"] = "\237\160\128",
  ["surrogate U+DFFF"] = "\237\191\191",
  ["overlong /"] = "\192\175",
  ["overlong NUL"] = "\192\128",
  ["above U+10FFFF"] = "\244\144\128\128",
}

local good_texts = {
  "plain", "", "tab\tnewline\ncr\r", "h\195\169llo", "\226\152\131", "\240\159\152\128",
  "\238\128\128", -- U+E000
  "\239\191\189", -- U+FFFD
  "\244\143\191\191", -- U+10FFFF
  "\127", "]]>", [[&<>'"]],
}

describe("lxmpp.stanza", function ()

  describe("builders", function ()
    it("st.stanza makes an empty element with the given attributes", function ()
      local attr = { to = "a@example.org", type = "get" }
      local s = st.stanza("foo", attr)
      assert.equal("foo", s.name)
      assert.equal(attr, s.attr)
      assert.same({}, s.tags)
      assert.equal(0, #s)
      assert.same({}, st.stanza("bar").attr)
    end)

    it("chains tag, text and up as in Prosody", function ()
      local m = st.message({ to = "juliet@example.com", type = "chat" })
        :tag("body"):text("hello"):up()
        :tag("x", { xmlns = "urn:x" }):tag("y"):text("deep"):up():up()
        :tag("z")
      assert.equal("message", m.name)
      assert.equal("juliet@example.com", m.attr.to)
      assert.equal(3, #m)
      assert.equal(3, #m.tags)
      assert.equal("body", m[1].name)
      assert.equal("hello", m[1][1])
      assert.equal(m[1], m.tags[1])
      assert.equal("x", m[2].name)
      assert.equal("y", m[2][1].name)
      assert.equal("deep", m[2][1][1])
      assert.equal("z", m[3].name)
      assert_well_formed_tree(m)
    end)

    it("keeps builder state in last_add and up past the top is harmless", function ()
      local s = st.stanza("a"):tag("b"):tag("c")
      assert.equal(2, #s.last_add)
      assert.equal("c", s.last_add[2].name)
      assert.is_false(s:at_top())
      s:up():up():up():up()
      assert.is_true(s:at_top())
      s:tag("d")
      assert.equal("d", s[2].name)
    end)

    it("reset returns the builder to the top", function ()
      local s = st.stanza("a"):tag("b"):tag("c"):reset()
      assert.is_true(s:at_top())
      s:tag("d"):text("t")
      assert.equal(2, #s)
      assert.equal("d", s[2].name)
      assert.equal("t", s[2][1])
      assert.equal(0, #s[1][1]) -- c got nothing
    end)

    it("text ignores nil and the empty string", function ()
      local s = st.stanza("a"):text(nil):text("")
      assert.equal(0, #s)
      s:text("x"):text("y")
      assert.same({ "x", "y" }, { s[1], s[2] })
      assert.equal("xy", s:get_text())
    end)

    it("text_tag adds a complete child and stays at the same level", function ()
      local s = st.stanza("a"):tag("b")
        :text_tag("c", "one", { k = "v" })
        :text_tag("d", "two")
        :text_tag("e") -- no text: empty element
      local b = s[1]
      assert.equal(3, #b)
      assert.equal("one", b[1][1])
      assert.equal("v", b[1].attr.k)
      assert.equal("two", b[2][1])
      assert.equal(0, #b[3])
      assert.equal("b", s.last_add[#s.last_add].name)
    end)

    it("body and query helpers as in Prosody", function ()
      local m = st.message():body("hi")
      assert.equal("hi", m:get_child_text("body"))
      local i = st.iq({ type = "get", id = "q1" }):query("jabber:iq:roster")
      assert.equal("jabber:iq:roster", i.tags[1].attr.xmlns)
      assert.equal("query", i.last_add[1].name)
    end)

    it("add_child adds where the builder is, add_direct_child to the element itself", function ()
      local child = st.stanza("child")
      local s = st.stanza("a"):tag("b")
      s:add_child(child)
      assert.equal(child, s[1][1])
      assert.equal(child, s[1].tags[1])
      s:add_direct_child(st.stanza("direct"))
      assert.equal("direct", s[2].name)
      assert.equal("direct", s.tags[2].name)
      s:add_child("text")
      assert.equal("text", s[1][2])
      assert.equal(1, #s[1].tags)
      assert_well_formed_tree(s)
    end)

    it("add_child refuses what is neither a stanza nor a string", function ()
      local s = st.stanza("a")
      assert.matches("stanza or a string", error_of(s.add_child, s, 42))
      assert.matches("stanza or a string", error_of(s.add_child, s, { name = "x", attr = {}, tags = {} }))
      assert.equal(0, #s)
    end)

    it("message puts the body in a <body/> child", function ()
      local m = st.message({ to = "a@b", type = "chat" }, "hello")
      assert.equal("message", m.name)
      assert.equal("chat", m.attr.type)
      assert.equal("body", m[1].name)
      assert.equal("hello", m[1][1])
      assert.is_true(m:at_top())
      assert.equal(0, #st.message({ to = "a@b" }))
      assert.equal(0, #st.message())
    end)

    it("presence", function ()
      local p = st.presence({ type = "unavailable" })
      assert.equal("presence", p.name)
      assert.equal("unavailable", p.attr.type)
      assert.equal("presence", st.presence().name)
    end)

    it("iq requires id and a valid type, with clear messages", function ()
      local i = st.iq({ type = "set", id = "x1", to = "example.org" })
      assert.equal("iq", i.name)
      assert.equal("set", i.attr.type)
      assert.matches("iq stanzas require", error_of(st.iq))
      assert.is_nil(st.iq({ type = "get" }).attr.id)   -- sessions assign ids when sending
      assert.matches("require a type attribute", error_of(st.iq, { id = "1" }))
      assert.matches("iq type must be get, set, result or error", error_of(st.iq, { id = "1", type = "bogus" }))
    end)

    it("is_stanza", function ()
      local s = st.stanza("a"):tag("b"):up()
      assert.is_true(st.is_stanza(s))
      assert.is_true(st.is_stanza(s[1]))
      assert.is_true(st.is_stanza(st.message()))
      assert.is_false(st.is_stanza({ name = "a", attr = {}, tags = {} }))
      assert.is_false(st.is_stanza("a"))
      assert.is_false(st.is_stanza(nil))
      assert.is_false(st.is_stanza(42))
      assert.equal(st.stanza_mt, getmetatable(s))
    end)

    it("methods added to stanza_mt show up on every stanza, as in Prosody", function ()
      st.stanza_mt.__spec_extra = function (self) return self.name end
      finally(function () st.stanza_mt.__spec_extra = nil end)
      assert.equal("a", st.stanza("a"):__spec_extra())
    end)
  end)

  describe("queries", function ()
    -- <message xmlns='jabber:client'>
    --   <body>hi</body> <subject xmlns='jabber:client'>s</subject>
    --   <x xmlns='urn:x'><item n='1'/>text<item n='2'/><other/></x>
    --   <x xmlns='urn:y'/> <body xmlns='urn:y'>other ns</body>
    -- </message>
    local function sample()
      return st.message({ xmlns = "jabber:client", type = "chat" })
        :text_tag("body", "hi")
        :text_tag("subject", "s", { xmlns = "jabber:client" })
        :tag("x", { xmlns = "urn:x" })
          :tag("item", { n = "1" }):up()
          :text("text")
          :tag("item", { n = "2" }):up()
          :tag("other"):up()
        :up()
        :tag("x", { xmlns = "urn:y" }):up()
        :text_tag("body", "other ns", { xmlns = "urn:y" })
    end

    it("get_child without xmlns: children in the parent's namespace", function ()
      local m = sample()
      assert.equal(m[1], m:get_child("body")) -- no xmlns of its own
      assert.equal(m[2], m:get_child("subject")) -- repeats the parent's
      assert.is_nil(m:get_child("x")) -- only in other namespaces
      assert.is_nil(m:get_child("nope"))
      assert.equal(m[1], m:get_child()) -- any name
    end)

    it("get_child with xmlns: the child's own or inherited namespace", function ()
      local m = sample()
      assert.equal(m[3], m:get_child("x", "urn:x"))
      assert.equal(m[4], m:get_child("x", "urn:y"))
      assert.equal(m[5], m:get_child("body", "urn:y"))
      assert.equal(m[1], m:get_child("body", "jabber:client"))
      assert.equal(m[3], m:get_child(nil, "urn:x"))
      assert.is_nil(m:get_child("x", "urn:z"))
    end)

    it("get_child in an element without a namespace", function ()
      local s = st.stanza("a"):tag("b"):up():tag("c", { xmlns = "urn:c" }):up()
      assert.equal(s[1], s:get_child("b"))
      assert.is_nil(s:get_child("b", "urn:c"))
      assert.is_nil(s:get_child("c"))
      assert.equal(s[2], s:get_child("c", "urn:c"))
    end)

    it("get_child_text and get_text", function ()
      local m = sample()
      assert.equal("hi", m:get_child_text("body"))
      assert.equal("other ns", m:get_child_text("body", "urn:y"))
      assert.is_nil(m:get_child_text("missing"))
      assert.is_nil(m:get_child_text("x", "urn:x")) -- has child elements
      assert.equal("", m:get_child_text("x", "urn:y")) -- empty
      assert.equal("ab", st.stanza("t"):text("a"):text("b"):get_text())
      assert.is_nil(m:get_text())
    end)

    it("childtags filters by name and namespace like get_child", function ()
      local m = sample()
      local x = m:get_child("x", "urn:x")
      local items = {}
      for item in x:childtags("item") do items[#items + 1] = item.attr.n end
      assert.same({ "1", "2" }, items)

      local all = {}
      for tag in x:childtags() do all[#all + 1] = tag.name end
      assert.same({ "item", "item", "other" }, all)

      local names = {}
      for tag in m:childtags() do names[#names + 1] = tag.name end
      assert.same({ "body", "subject" }, names)

      local in_y = {}
      for tag in m:childtags(nil, "urn:y") do in_y[#in_y + 1] = tag.name end
      assert.same({ "x", "body" }, in_y)

      local bodies = {}
      for tag in m:childtags("body", "urn:y") do bodies[#bodies + 1] = tag:get_text() end
      assert.same({ "other ns" }, bodies)

      for _ in m:childtags("none") do error("should not iterate") end
    end)

    it("children iterates over elements and text in order", function ()
      local x = sample():get_child("x", "urn:x")
      local seen = {}
      for child in x:children() do
        seen[#seen + 1] = type(child) == "string" and child or child.name
      end
      assert.same({ "item", "text", "item", "other" }, seen)
    end)

    it("child_with_name, child_with_ns, get_child_with_attr", function ()
      local m = sample()
      assert.equal(m[3], m:child_with_name("x"))
      assert.equal(m[4], m:child_with_ns("urn:y"))
      local x = m[3]
      assert.equal(x[3], x:get_child_with_attr("item", nil, "n", "2"))
      assert.equal(x[1], x:get_child_with_attr("item", nil, "n", "1", function (v) return v end))
      assert.is_nil(x:get_child_with_attr("item", nil, "n", "3"))
    end)

    describe("find", function ()
      local function form()
        return st.message({ type = "chat", xmlns = "jabber:client" })
          :text_tag("body", "hello")
          :tag("x", { xmlns = "jabber:x:data", type = "submit" })
            :tag("field", { var = "FORM_TYPE" }):text_tag("value", "urn:form"):up()
            :tag("field", { var = "name" }):text_tag("value", "Juliet"):up()
          :up()
          :tag("event", { xmlns = "urn:ev" }):tag("items", { node = "n1", xmlns = "urn:ev2" }):up():up()
      end

      it("finds children, text and attributes", function ()
        local m = form()
        assert.equal(m[1], m:find("body"))
        assert.equal("hello", m:find("body#"))
        assert.equal("chat", m:find("@type"))
        assert.equal(m[2], m:find("{jabber:x:data}x"))
        assert.equal("submit", m:find("{jabber:x:data}x@type"))
        assert.equal("submit", m:find("{jabber:x:data}x/@type"))
        assert.equal("FORM_TYPE", m:find("{jabber:x:data}x/field@var"))
        assert.equal("urn:form", m:find("{jabber:x:data}x/field/value#"))
        assert.equal("n1", m:find("{urn:ev}event/{urn:ev2}items@node"))
        assert.equal(m[3][1], m:find("{urn:ev}event/{urn:ev2}"))
      end)

      it("returns nil for what is not there", function ()
        local m = form()
        assert.is_nil(m:find("subject"))
        assert.is_nil(m:find("subject#"))
        assert.is_nil(m:find("x/field@var")) -- x is not in the default namespace
        assert.is_nil(m:find("{jabber:x:data}x/nothing/value#"))
        assert.is_nil(m:find("@missing"))
        assert.is_nil(m:find("{urn:ev}event/items@node"))
      end)

      it("refuses malformed paths", function ()
        local m = form()
        assert.matches("unclosed", error_of(m.find, m, "{urn:x"))
        assert.matches("must come last", error_of(m.find, m, "body#/x"))
        assert.matches("must be a string", error_of(m.find, m, 42))
      end)
    end)
  end)

  describe("maptags and remove_children", function ()
    local function list()
      return st.stanza("list", { xmlns = "urn:l" })
        :text("start")
        :tag("a"):up()
        :tag("b", { n = "1" }):up()
        :text("middle")
        :tag("b", { n = "2" }):up()
        :tag("b", { xmlns = "urn:other" }):up()
        :tag("c"):up()
        :text("end")
    end

    local function shape(s)
      local out = {}
      for child in s:children() do
        out[#out + 1] = type(child) == "string" and child
          or child.name .. (child.attr.n or "") .. (child.attr.xmlns and "{" .. child.attr.xmlns .. "}" or "")
      end
      return out
    end

    it("maptags removes tags for which the callback returns nil, keeping text", function ()
      local s = list()
      local visited = 0
      assert.equal(s, s:maptags(function (tag)
        visited = visited + 1
        if tag.name == "b" then return nil end
        return tag
      end))
      assert.equal(5, visited)
      assert.same({ "start", "a", "middle", "c", "end" }, shape(s))
      assert.equal(2, #s.tags)
      assert_well_formed_tree(s)
    end)

    it("maptags replaces tags with what the callback returns", function ()
      local s = list()
      s:maptags(function (tag)
        if tag.name == "c" then return st.stanza("replaced") end
        return tag
      end)
      assert.same({ "start", "a", "b1", "middle", "b2", "b{urn:other}", "replaced", "end" }, shape(s))
      assert.equal("replaced", s.tags[5].name)
      assert_well_formed_tree(s)
    end)

    it("maptags refuses a non-stanza result and leaves the element intact", function ()
      local s = list()
      local before = shape(s)
      local err = error_of(s.maptags, s, function (tag)
        if tag.name == "b" then return nil end
        if tag.name == "c" then return "text" end
        return tag
      end)
      assert.matches("must return a stanza or nil", err)
      assert.same(before, shape(s))
      assert_well_formed_tree(s)
    end)

    it("remove_children by name in the element's namespace", function ()
      local s = list()
      assert.equal(s, s:remove_children("b"))
      assert.same({ "start", "a", "middle", "b{urn:other}", "c", "end" }, shape(s))
      assert_well_formed_tree(s)
    end)

    it("remove_children by name and namespace", function ()
      local s = list()
      s:remove_children("b", "urn:other")
      assert.same({ "start", "a", "b1", "middle", "b2", "c", "end" }, shape(s))
      s:remove_children(nil, "urn:l")
      assert.same({ "start", "middle", "end" }, shape(s))
      assert.equal(0, #s.tags)
    end)

    it("remove_children with no match changes nothing", function ()
      local s = list()
      s:remove_children("zzz")
      assert.same(shape(list()), shape(s))
    end)
  end)

  describe("reply", function ()
    it("swaps to and from, keeps the id, answers get/set iqs with result", function ()
      local req = st.iq({ type = "get", id = "r1", from = "romeo@example.net/orchard", to = "example.net" })
        :query("jabber:iq:roster")
      local r = st.reply(req)
      assert.equal("iq", r.name)
      assert.same({ to = "romeo@example.net/orchard", from = "example.net", id = "r1", type = "result" }, r.attr)
      assert.equal(0, #r)
      assert.equal("result", st.reply(st.iq({ type = "set", id = "s" })).attr.type)
    end)

    it("keeps the type of messages and presences", function ()
      local m = st.message({ type = "chat", from = "a@b/c", to = "d@e", id = "m1" }, "hi")
      local r = st.reply(m)
      assert.same({ to = "a@b/c", from = "d@e", id = "m1", type = "chat" }, r.attr)
      assert.equal(0, #r)
      local p = st.reply(st.presence({ from = "a@b" }))
      assert.equal("presence", p.name)
      assert.equal("a@b", p.attr.to)
      assert.is_nil(p.attr.type)
    end)

    it("refuses what is not a stanza", function ()
      assert.matches("reply expects a stanza", error_of(st.reply, { name = "iq", attr = {} }))
    end)
  end)

  describe("error_reply", function ()
    local req = st.iq({ type = "get", id = "e1", from = "a@b/c", to = "service.example" })
      :query("urn:q")

    it("builds an RFC 6120 stanza error", function ()
      local e = st.error_reply(req, "cancel", "item-not-found", "No such item")
      assert.equal("iq", e.name)
      assert.same({ to = "a@b/c", from = "service.example", id = "e1", type = "error" }, e.attr)
      assert.equal(1, #e)
      local err = e[1]
      assert.equal("error", err.name)
      assert.same({ type = "cancel" }, err.attr)
      assert.equal(2, #err)
      assert.equal("item-not-found", err[1].name)
      assert.same({ xmlns = xmlns_stanzas }, err[1].attr)
      assert.equal(0, #err[1])
      assert.equal("text", err[2].name)
      assert.same({ xmlns = xmlns_stanzas }, err[2].attr)
      assert.equal("No such item", err[2][1])
      assert_well_formed_tree(e)
    end)

    it("leaves out <text/> without text, and the builder inside <error/>", function ()
      local e = st.error_reply(req, "modify", "bad-request")
      assert.equal(1, #e[1])
      e:tag("app-error", { xmlns = "urn:app" }):up()
      assert.equal("app-error", e[1][2].name)
      local _, _, _, extra = e:get_error()
      assert.equal("app-error", extra.name)
    end)

    it("works for messages and presences", function ()
      local m = st.message({ type = "chat", from = "a@b", to = "c@d", id = "x" }, "hi")
      local e = st.error_reply(m, "wait", "resource-constraint")
      assert.equal("message", e.name)
      assert.equal("error", e.attr.type)
      assert.equal("a@b", e.attr.to)
      assert.equal(0, #e:get_child("error"):get_child("resource-constraint", xmlns_stanzas))
    end)

    it("sets by unless it is the sender", function ()
      local e = st.error_reply(req, "cancel", "service-unavailable", nil, "service.example/x")
      assert.equal("service.example/x", e[1].attr.by)
      e = st.error_reply(req, "cancel", "service-unavailable", nil, "service.example")
      assert.is_nil(e[1].attr.by)
    end)

    it("accepts an error table as Prosody's util.error makes", function ()
      local e = st.error_reply(req, {
        type = "auth", condition = "forbidden", text = "go away",
        extra = { namespace = "urn:app", condition = "why" },
        context = { by = "other.example" },
      })
      local etype, cond, text, extra = e:get_error()
      assert.same({ "auth", "forbidden", "go away", "why" }, { etype, cond, text, extra.name })
      assert.equal("urn:app", extra.attr.xmlns)
      assert.equal("other.example", e[1].attr.by)

      local gone = st.error_reply(req, { type = "cancel", condition = "gone", extra = { uri = "xmpp:new@example" } })
      assert.equal("xmpp:new@example", gone[1][1][1])

      local tag = st.stanza("custom", { xmlns = "urn:c" })
      local with_tag = st.error_reply(req, { type = "cancel", condition = "conflict", extra = { tag = tag } })
      assert.equal(tag, with_tag[1][2])
    end)

    it("refuses to answer an error, and bad types or conditions", function ()
      local e = st.error_reply(req, "cancel", "bad-request")
      assert.matches("type error", error_of(st.error_reply, e, "cancel", "bad-request"))
      assert.matches("error type must be", error_of(st.error_reply, req, "bogus", "bad-request"))
      assert.matches("error type must be", error_of(st.error_reply, req, nil, "bad-request"))
      assert.matches("condition must be a string", error_of(st.error_reply, req, "cancel"))
      assert.matches("invalid element name", error_of(st.error_reply, req, "cancel", "not a name"))
      assert.matches("expects a stanza", error_of(st.error_reply, "x", "cancel", "bad-request"))
    end)
  end)

  describe("get_error", function ()
    it("returns type, condition, text and the application element", function ()
      local e = st.error_reply(st.message({ from = "a@b" }), "modify", "not-acceptable", "too long")
      e:tag("too-long", { xmlns = "urn:app" }):up()
      local etype, cond, text, extra = e:get_error()
      assert.equal("modify", etype)
      assert.equal("not-acceptable", cond)
      assert.equal("too long", text)
      assert.equal("too-long", extra.name)
      assert.equal("urn:app", extra.attr.xmlns)
    end)

    it("defaults the condition to undefined-condition", function ()
      local s = st.stanza("iq", { type = "error", id = "1" }):tag("error", { type = "cancel" })
      local etype, cond, text, extra = s:get_error()
      assert.same({ "cancel", "undefined-condition" }, { etype, cond })
      assert.is_nil(text)
      assert.is_nil(extra)
    end)

    it("the condition is not mistaken for the text, in any order", function ()
      local s = st.stanza("message", { type = "error" }):tag("error", { type = "auth" })
        :text_tag("text", "first", { xmlns = xmlns_stanzas })
        :tag("not-authorized", { xmlns = xmlns_stanzas }):up()
      local _, cond, text = s:reset():get_error()
      assert.equal("not-authorized", cond)
      assert.equal("first", text)
    end)

    it("returns nothing without an <error/>", function ()
      assert.equal(4, select("#", st.message():get_error()))
      local etype, cond, text, extra = st.message({}, "hi"):get_error()
      assert.is_nil(etype); assert.is_nil(cond); assert.is_nil(text); assert.is_nil(extra)
    end)
  end)

  describe("clone", function ()
    local function sample()
      return st.message({ to = "a@b", xmlns = "jabber:client" }, "hi")
        :tag("x", { xmlns = "urn:x", ["urn:x\1attr"] = "v" })
          :text("before"):tag("y", { n = "1" }):text("deep"):up():text("after")
        :up()
    end

    it("is deep and equal", function ()
      local orig = sample():tag("open") -- builder state is not copied
      local c = orig:clone()
      assert.is_true(st.is_stanza(c))
      assert.is_nil(c.last_add)
      assert_same_element(orig, c)
      assert_well_formed_tree(c)
      assert.are_not.equal(orig.attr, c.attr)
      assert.are_not.equal(orig[2], c[2])
      assert.are_not.equal(orig[2].attr, c[2].attr)
      assert.are_not.equal(orig.tags, c.tags)
      assert.equal(c[2], c.tags[2])
      assert_same_element(orig, st.clone(orig))
    end)

    it("is independent of the original", function ()
      local orig = sample()
      local c = orig:clone()
      c.attr.to = "other@b"
      c[2].attr.n = "changed"
      c[2][2].attr.n = "2"
      c[2]:text("more")
      c:tag("new"):up()
      c[1][1] = "changed"
      c:remove_children("x", "urn:x")
      assert_same_element(sample(), orig)
      orig[2][2]:text("!")
      assert.is_nil(c:get_child("x", "urn:x"))
    end)

    it("refuses what is not a stanza", function ()
      assert.matches("clone expects a stanza", error_of(st.clone, {}))
    end)
  end)

  describe("construction-time refusals #core", function ()
    for _, name in ipairs(bad_names) do
      local shown = ("%q"):format(name)
      it("refuses element name " .. shown, function ()
        assert.matches("invalid element name", error_of(st.stanza, name))
        local s = st.stanza("ok")
        assert.matches("invalid element name", error_of(s.tag, s, name))
        assert.matches("invalid element name", error_of(s.text_tag, s, name, "text"))
        assert.matches("invalid element name", error_of(st.error_reply, st.message(), "cancel", name))
        assert.equal(0, #s) -- nothing half-built
        assert.is_true(s:at_top())
      end)
    end

    it("refuses non-string element names", function ()
      for _, v in ipairs({ 42, true, {} }) do
        assert.matches("element name must be a string", error_of(st.stanza, v))
      end
      assert.matches("element name must be a string", error_of(st.stanza, nil))
    end)

    it("accepts NCNames, non-ASCII included", function ()
      for _, name in ipairs({ "a", "_a", "a1", "a-b", "a.b", "A_B-c.1", "donn\195\169es", "\228\184\173" }) do
        assert.equal(name, st.stanza(name).name)
      end
    end)

    for _, name in ipairs(bad_attr_names) do
      local shown = ("%q"):format(name)
      it("refuses attribute name " .. shown, function ()
        local attr = { [name] = "v" }
        assert.matches("invalid attribute name", error_of(st.stanza, "a", attr))
        local s = st.stanza("a")
        assert.matches("invalid attribute name", error_of(s.tag, s, "b", attr))
        assert.matches("invalid attribute name", error_of(s.text_tag, s, "b", "t", attr))
        assert.matches("invalid attribute name", error_of(st.message, attr, "body"))
        assert.matches("invalid attribute name", error_of(st.presence, attr))
        assert.matches("invalid attribute name", error_of(st.iq, { type = "get", id = "1", [name] = "v" }))
        assert.equal(0, #s)
      end)
    end

    it("accepts attribute names: NCName, xmlns, xml:lang, uri\\1name", function ()
      for _, name in ipairs({ "to", "xmlns", "xml:lang", "urn:x\1attr", "donn\195\169es" }) do
        assert.equal("v", st.stanza("a", { [name] = "v" }).attr[name])
      end
    end)

    it("refuses non-string attribute names and values, and non-table attributes", function ()
      assert.matches("attribute names must be strings", error_of(st.stanza, "a", { "positional" }))
      assert.matches("attribute names must be strings", error_of(st.stanza, "a", { [true] = "x" }))
      assert.matches("must be a string, got number", error_of(st.stanza, "a", { id = 42 }))
      assert.matches("must be a string, got boolean", error_of(st.message, { to = true }))
      assert.matches("attributes must be a table", error_of(st.stanza, "a", "to=x"))
    end)

    for label, text in pairs(bad_texts) do
      it("refuses " .. label .. " in text and attribute values", function ()
        local msg = "invalid UTF%-8 or character not allowed in XML"
        local s = st.stanza("a"):tag("b")
        assert.matches(msg, error_of(s.text, s, text))
        assert.matches(msg, error_of(s.text_tag, s, "c", text))
        assert.matches(msg, error_of(s.add_child, s, text))
        assert.matches(msg, error_of(s.add_direct_child, s, text))
        assert.matches(msg, error_of(s.body, s, text))
        assert.matches(msg, error_of(st.message, { to = "a@b" }, text))
        assert.matches(msg, error_of(st.stanza, "a", { v = text }))
        assert.matches(msg, error_of(s.tag, s, "c", { v = text }))
        assert.matches(msg, error_of(st.presence, { to = text }))
        assert.matches(msg, error_of(st.iq, { type = "get", id = text }))
        assert.matches(msg, error_of(st.error_reply, st.message({ from = "a@b" }), "cancel", "bad-request", text))
        -- the builder is where it was and holds nothing
        assert.equal(1, #s)
        assert.equal(0, #s[1])
        assert.equal(s[1], s.last_add[#s.last_add])
      end)
    end

    it("accepts every XML character, tab, LF and CR included", function ()
      for _, text in ipairs(good_texts) do
        local s = st.stanza("a", { v = text }):text(text)
        assert.equal(text, s.attr.v)
        assert.equal(text, s:get_text())
      end
    end)

    it("refuses non-string text; nil text is a no-op", function ()
      local s = st.stanza("a")
      assert.matches("text must be a string, got number", error_of(s.text, s, 42))
      assert.matches("text must be a string, got table", error_of(s.text, s, {}))
      assert.matches("text must be a string, got boolean", error_of(s.text_tag, s, "b", false))
      assert.matches("text must be a string, got number", error_of(st.message, {}, 1))
      assert.equal(s, s:text(nil))
      assert.equal(0, #s)
    end)

    it("raises at the caller's line", function ()
      -- each case is a one-line function: the error must name that line
      local m = st.message({ from = "a@b" })
      local cases = {
        stanza = function () st.stanza("1a") end,
        tag = function () st.stanza("a"):tag("a b") end,
        ["tag attr"] = function () st.stanza("a"):tag("b", { ["a b"] = "" }) end,
        text = function () st.stanza("a"):text("\195") end,
        ["text type"] = function () st.stanza("a"):text(1) end,
        text_tag = function () st.stanza("a"):text_tag("b", "\0") end,
        ["text_tag name"] = function () st.stanza("a"):text_tag("", "x") end,
        add_child = function () st.stanza("a"):add_child("\1") end,
        message = function () st.message({}, "\237\160\128") end,
        ["message attr"] = function () st.message({ to = "\255" }) end,
        presence = function () st.presence({ to = 1 }) end,
        iq = function () st.iq({ id = "1" }) end,
        ["iq attr"] = function () st.iq({ id = "1", type = "get", to = "\0" }) end,
        reply = function () st.reply({}) end,
        error_reply = function () st.error_reply(m, "cancel", "bad-request", "\239\191\190") end,
        ["error_reply condition"] = function () st.error_reply(m, "cancel", "1") end,
        ["error_reply type"] = function () st.error_reply(m, "x", "bad-request") end,
        maptags = function () st.stanza("a"):tag("b"):up():maptags(function () return 1 end) end,
        find = function () st.stanza("a"):find("{x") end,
        clone = function () st.clone({}) end,
        parse = function () st.parse(42) end,
      }
      for label, fn in pairs(cases) do
        local line = debug.getinfo(fn, "S").linedefined
        local err = error_of(fn)
        assert.matches("stanza_spec.lua:" .. line .. ": lxmpp.stanza: ", err, 1, true, label)
      end
    end)
  end)

  describe("serialization #core", function ()
    it("writes a simple stanza", function ()
      local m = st.message({ to = "a@b" }, "hi")
      assert.equal("<message to='a@b'><body>hi</body></message>", q(tostring(m)))
      assert.equal("<a/>", tostring(st.stanza("a")))
      assert.equal("<a>x</a>", tostring(st.stanza("a"):text("x")))
    end)

    it("escapes & < > ' \" in text", function ()
      for _, text in ipairs({ [[&<>'"]], "a & b < c > d ' e \" f", "a&amp;b", "]]>", "x]]>y]]>", "&#1;", "cr\r\nlf" }) do
        local xml = tostring(st.stanza("a"):text(text))
        local inner = xml:match("^<a>(.*)</a>$")
        assert.is_string(inner, xml)
        assert_escaped(inner, text)
      end
    end)

    it("escapes & < > ' \" and whitespace in attribute values", function ()
      for _, value in ipairs({ [[&<>'"]], "'", '"', "a&amp;b", "]]>", "tab\tlf\ncr\r", "x > y" }) do
        local xml = tostring(st.stanza("a", { v = value }))
        local quote, escaped = xml:match("^<a v=(['\"])(.-)%1/>$")
        assert.is_string(escaped, xml)
        assert_escaped(escaped, value, quote)
      end
    end)

    it("writes xmlns only where it changes", function ()
      local s = st.stanza("iq", { xmlns = "jabber:client", type = "get", id = "1" })
        :tag("query", { xmlns = "jabber:client" })
          :tag("item", { xmlns = "jabber:iq:roster" })
            :tag("group", { xmlns = "jabber:iq:roster" }):up()
            :tag("back", { xmlns = "jabber:client" }):up()
            :tag("inherit"):up()
      local xml = q(tostring(s))
      local _, count = xml:gsub("xmlns=", "")
      assert.equal(3, count)
      assert.matches("<query>", xml, 1, true)
      assert.matches("<item xmlns='jabber:iq:roster'><group/><back xmlns='jabber:client'/><inherit/></item>", xml, 1, true)
      assert.matches("^<iq [^>]*xmlns='jabber:client'", xml)
    end)

    it("writes xml:lang", function ()
      local m = st.message({ ["xml:lang"] = "en" }, "hi")
      assert.equal("<message xml:lang='en'><body>hi</body></message>", q(tostring(m)))
      assert.equal("en", st.parse(tostring(m)).attr["xml:lang"])
    end)

    it("writes uri\\1name attributes with a prefix declaration", function ()
      local xml = q(tostring(st.stanza("a", { ["urn:ns\1attr"] = "v" })))
      local prefix, uri = xml:match("xmlns:([%w_.-]+)='([^']*)'")
      assert.equal("urn:ns", uri)
      assert.matches(" " .. prefix .. ":attr='v'", xml, 1, true)
    end)

    it("refuses tables mutated by hand into bad XML", function ()
      local function bad(mutate)
        local s = st.message({ to = "a@b" }, "hi"):tag("x", { xmlns = "urn:x" }):up()
        mutate(s)
        return error_of(tostring, s)
      end
      bad(function (s) s.name = "a b" end)
      bad(function (s) s[2].name = "1x" end)
      bad(function (s) s.name = "x:y" end)
      bad(function (s) s.attr.to = "\0" end)
      bad(function (s) s.attr.to = "caf\195" end)
      bad(function (s) s.attr.to = 42 end)
      bad(function (s) s.attr["a b"] = "x" end)
      bad(function (s) s.attr[1] = "x" end)
      bad(function (s) s[1][1] = "\239\191\190" end)
      bad(function (s) s[1][1] = "\237\160\128" end)
      bad(function (s) s[1][1] = 42 end)
      bad(function (s) s[#s + 1] = "\1" end)
      bad(function (s) s[2].attr.xmlns = "\255" end)
    end)

    it("top_tag is the opening tag alone", function ()
      local s = st.stanza("stream", { xmlns = "http://etherx.jabber.org/streams", to = "example.org" })
        :tag("features"):up()
      local top = q(s:top_tag())
      assert.matches("^<stream [^<]*>$", top)
      assert.matches("to='example.org'", top, 1, true)
      assert.matches("xmlns='http://etherx.jabber.org/streams'", top, 1, true)
      assert.is_nil(top:find("/>", 1, true))
      assert.equal("<a>", st.stanza("a"):top_tag())
    end)

    it("pretty indents nested elements for humans", function ()
      local m = st.message({ to = "a@b", xmlns = "jabber:client" }, "hi & bye")
        :tag("x", { xmlns = "urn:x" }):tag("y"):up():text("mixed"):up()
      local before = tostring(m)
      local p = q(m:pretty())
      assert.equal(table.concat({
        "<message to='a@b' xmlns='jabber:client'>",
        "  <body>hi &amp; bye</body>",
        "  <x xmlns='urn:x'>",
        "    <y/>",
        "    mixed",
        "  </x>",
        "</message>",
      }, "\n"), (p:gsub(" xmlns='jabber:client' to='a@b'>", " to='a@b' xmlns='jabber:client'>")))
      assert.equal("<a>\n\t<b/>\n</a>", m.pretty(st.stanza("a"):tag("b"), "\t"))
      assert.equal(before, tostring(m)) -- unchanged
    end)
  end)

  describe("parse #core", function ()
    it("parses one element into stanzas", function ()
      local s = assert(st.parse("<message xmlns='jabber:client' to='a@b' type='chat'><body>hi &amp; bye</body></message>"))
      assert_well_formed_tree(s)
      assert.equal("message", s.name)
      assert.equal("jabber:client", s.attr.xmlns)
      assert.equal("a@b", s.attr.to)
      assert.equal("hi & bye", s:get_child_text("body"))
      assert.equal("hi & bye", s:get_child_text("body", "jabber:client"))
      assert.equal("hi & bye", s:find("body#"))
    end)

    it("resolves prefixes to namespaces", function ()
      local s = assert(st.parse("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"
        .. "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"))
      assert.equal("features", s.name)
      assert.equal("http://etherx.jabber.org/streams", s.attr.xmlns)
      assert.is_nil(s.attr["xmlns:stream"])
      assert.is_table(s:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
      local a = assert(st.parse("<a xmlns:f='urn:f' f:b='1' xml:lang='de'/>"))
      assert.equal("1", a.attr["urn:f\1b"])
      assert.equal("de", a.attr["xml:lang"])
    end)

    it("returns nil, message, condition for bad input", function ()
      local cases = {
        { "<a>", "not-well-formed" },
        { "<a></b>", "not-well-formed" },
        { "", "not-well-formed" },
        { "text", "not-well-formed" },
        { "<a/><b/>", "not-well-formed" },
        { "<a>\0</a>", "not-well-formed" },
        { "<a>&#1;</a>", "not-well-formed" },
        { "<a>caf\195</a>", "not-well-formed" },
        { "<a v='\255'/>", "not-well-formed" },
        { "<p:a/>", "not-well-formed" },
        { "<a><!-- c --></a>", "restricted-xml" },
        { "<a><?pi x?></a>", "restricted-xml" },
        { "<!DOCTYPE a><a/>", "restricted-xml" },
      }
      for _, case in ipairs(cases) do
        local s, msg, cond = st.parse(case[1])
        assert.is_nil(s, case[1])
        assert.is_string(msg, case[1])
        assert.equal(case[2], cond, case[1])
      end
    end)

    it("refuses a non-string", function ()
      assert.matches("parse expects a string", error_of(st.parse, nil))
    end)
  end)

  describe("round trip st.parse(tostring(x)) #core", function ()
    local cases = {
      ["a message"] = function ()
        return st.message({ to = "juliet@example.com", from = "romeo@example.net/orchard", type = "chat", id = "m1" },
          "Art thou not Romeo?")
      end,
      ["an empty element"] = function () return st.stanza("a") end,
      ["empty attribute values"] = function () return st.stanza("a", { v = "", w = "" }):tag("b"):up() end,
      ["non-ASCII text, attributes and names"] = function ()
        return st.message({ to = "j\195\188liet@\195\169xample.com", ["xml:lang"] = "fr" },
          "h\195\169llo w\195\182rld \226\128\148 \226\152\131 \240\159\152\128 \228\184\173\230\150\135")
          :tag("donn\195\169es", { xmlns = "urn:\195\169t\195\169", ["cl\195\169"] = "\226\130\172" }):up()
      end,
      ["XML character extremes"] = function ()
        return st.stanza("a", { v = "\238\128\128\239\191\189\244\143\191\191\127" })
          :text("\238\128\128\239\191\189\244\143\191\191\127")
      end,
      ["CR, LF and tab in text and attributes"] = function ()
        return st.stanza("a", { v = "line1\r\nline2\tend\r", w = "\n", x = "\t \t", y = "\r" })
          :text("line1\r\nline2\tend\r"):tag("b"):text("\r"):up():tag("c"):text("\r\n"):up()
      end,
      ["]]> in text and attributes"] = function ()
        return st.stanza("a", { v = "]]>" }):text("x]]>y"):tag("b"):text("]]>"):up()
      end,
      ["the five special characters"] = function ()
        return st.stanza("a", { v = [[&<>'"]], w = "&amp;&lt;" }):text([[&<>'"]]):tag("b"):text("&amp;"):up()
      end,
      ["mixed content and whitespace-only text"] = function ()
        return st.stanza("p"):text("one "):tag("b"):text("two"):up():text(" three")
          :tag("i"):up():text("\n  "):tag("j"):up():text("   ")
      end,
      ["nested namespaces"] = function ()
        return st.iq({ xmlns = "jabber:client", type = "set", id = "n1" })
          :tag("pubsub", { xmlns = "http://jabber.org/protocol/pubsub" })
            :tag("publish", { node = "urn:xmpp:microblog:0" })
              :tag("item", { id = "i1" })
                :tag("entry", { xmlns = "http://www.w3.org/2005/Atom" })
                  :text_tag("title", "hello", { type = "text" })
                  :tag("back", { xmlns = "jabber:client" }):tag("inner"):up():up()
                  :tag("same", { xmlns = "http://www.w3.org/2005/Atom" }):up()
                :up()
              :up()
            :up()
            :tag("publish-options")
              :tag("x", { xmlns = "jabber:x:data", type = "submit" })
                :tag("field", { var = "FORM_TYPE", type = "hidden" })
                  :text_tag("value", "http://jabber.org/protocol/pubsub#publish-options")
      end,
      ["no namespace under a namespaced parent's sibling"] = function ()
        return st.stanza("root"):tag("a", { xmlns = "urn:a" }):up():tag("b"):tag("c"):up():up()
      end,
      ["a namespaced attribute"] = function ()
        return st.stanza("a", { xmlns = "urn:a", ["urn:other\1attr"] = "v", ["urn:third\1x"] = "w" })
          :tag("b", { ["urn:other\1attr"] = "inner" }):up()
      end,
      ["xml:lang on several levels"] = function ()
        return st.message({ ["xml:lang"] = "en" }):text_tag("body", "colour", { ["xml:lang"] = "en-GB" })
          :text_tag("body", "Farbe", { ["xml:lang"] = "de" })
      end,
      ["an error reply"] = function ()
        return st.error_reply(st.iq({ type = "get", id = "e", from = "a@b/c", to = "d" }),
          "cancel", "feature-not-implemented", "not <here> & not now")
          :tag("unsupported", { xmlns = "http://jabber.org/protocol/pubsub#errors", feature = "publish" })
      end,
      ["deep nesting"] = function ()
        local s = st.stanza("d0")
        for i = 1, 50 do s:tag("d" .. i, { i = tostring(i) }) end
        return s:text("bottom")
      end,
      ["many children and a long text"] = function ()
        local s = st.stanza("list")
        for i = 1, 500 do s:text_tag("item", tostring(i), { n = tostring(i) }) end
        return s:text_tag("long", ("x\195\169<&>"):rep(8000))
      end,
    }

    for label, make in pairs(cases) do
      it(label, function ()
        local x = make()
        local xml = tostring(x)
        local parsed, msg, cond = st.parse(xml)
        assert.is_table(parsed, tostring(msg) .. " " .. tostring(cond) .. " in " .. xml:sub(1, 200))
        assert_well_formed_tree(parsed)
        assert_same_element(x, parsed)
        -- and once more from what was parsed
        assert_same_element(x, assert(st.parse(tostring(parsed))))
        assert_same_element(x, assert(st.parse(tostring(x:clone()))))
      end)
    end

    it("a parsed stanza can be extended with the builder", function ()
      local s = assert(st.parse("<message xmlns='jabber:client'><body>hi</body></message>"))
      s:tag("active", { xmlns = "http://jabber.org/protocol/chatstates" }):up():text_tag("thread", "t1")
      assert.equal("t1", s:get_child_text("thread"))
      local again = assert(st.parse(tostring(s)))
      assert_same_element(s, again)
      assert.is_table(again:get_child("active", "http://jabber.org/protocol/chatstates"))
    end)
  end)
end)
