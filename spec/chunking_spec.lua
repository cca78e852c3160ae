-- Property: any chunking of the same bytes gives the same stanzas and the
-- same error (docs/api.md). Streams are generated with UTF-8 of
-- every length, entities, character references, CDATA, namespaces and
-- attributes, then cut at random places (inside UTF-8 sequences, entities
-- and tag names included), at every single place, and byte by byte.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local support = require "spec.support.canon"
local data = require "spec.data.stream_cases"

local events, split_at, bytes = support.events, support.split_at, support.bytes

local bxor, lshift, rshift = compat.bxor, compat.lshift, compat.rshift
local rng_state
local function rnd(n) -- deterministic: xorshift32, independent of math.random
  local x = rng_state
  x = bxor(x, lshift(x, 13))              -- (lshift keeps 32 bits)
  x = bxor(x, rshift(x, 17))
  x = bxor(x, lshift(x, 5))
  rng_state = x
  return x % n + 1
end

local function pick(t) return t[rnd(#t)] end

local names = { "message", "body", "x", "item", "query", "delay", "nick", "éléments", "中文", "a-b.c_d" }
local spaces = { nil, "urn:a", "jabber:client", "http://jabber.org/protocol/caps", "urn:xmpp:delay" }
local texts = { "hello", "é", "中文", "😀", "a&amp;b", "&lt;tag&gt;", "&#233;", "&#x1F600;",
  "<![CDATA[<&>]]>", " ", "\n", "q&quot;&apos;", "line\r\nnext", "tab\t" }
local attrs = { "to", "from", "id", "type", "xml:lang", "p:ext" }
local values = { "a@b/c", "é中😀", "x&amp;y", "&lt;&gt;", "1", "", "&#10;" }

local function gen_element(depth)
  local name = pick(names)
  local out = { "<", name }
  local ns = pick(spaces)
  if ns then out[#out + 1] = " xmlns='" .. ns .. "'" end
  local used = {}
  for _ = 1, rnd(4) - 1 do
    local a = pick(attrs)
    if not used[a] then
      used[a] = true
      if a == "p:ext" then out[#out + 1] = " xmlns:p='urn:p'" end
      out[#out + 1] = " " .. a .. "='" .. pick(values) .. "'"
    end
  end
  local n = depth < 4 and rnd(5) - 1 or 0
  if n == 0 and rnd(2) == 1 then
    out[#out + 1] = "/>"
    return table.concat(out)
  end
  out[#out + 1] = ">"
  for _ = 1, n do
    if rnd(2) == 1 then out[#out + 1] = pick(texts)
    else out[#out + 1] = gen_element(depth + 1) end
  end
  out[#out + 1] = "</" .. name .. ">"
  return table.concat(out)
end

local function gen_stream(nstanzas)
  local out = { data.header }
  for _ = 1, nstanzas do
    out[#out + 1] = gen_element(1)
    if rnd(4) == 1 then out[#out + 1] = " \n" end
  end
  if rnd(2) == 1 then out[#out + 1] = "</stream:stream>" end
  return table.concat(out)
end

local function random_cuts(len, n)
  local cuts = {}
  for i = 1, n do cuts[i] = rnd(len) end
  table.sort(cuts)
  return cuts
end

describe("chunking property", function()
  it("generated streams give identical events for random chunkings", function()
    rng_state = 0x2545F491
    for round = 1, 60 do
      local s = gen_stream(rnd(12))
      local whole = events(lxmpp, { s })
      assert.is_true(#whole >= 1, "round " .. round)
      assert.is_nil(whole[#whole]:match("^error"), "generated stream must be valid: " .. s)
      for _ = 1, 5 do
        local chunks = split_at(s, random_cuts(#s, rnd(40)))
        assert.same(whole, events(lxmpp, chunks), "round " .. round)
      end
      assert.same(whole, events(lxmpp, bytes(s)), "round " .. round .. " byte by byte")
    end
  end)

  it("every two-piece split of every spec case gives the same events", function()
    for _, case in ipairs(data.cases) do
      local s = case.raw and case.input or data.header .. case.input
      local whole = events(lxmpp, { s }, case.opts)
      assert.same(case.expect, whole, case.name)
      for k = 1, #s - 1 do
        assert.same(whole, events(lxmpp, { s:sub(1, k), s:sub(k + 1) }, case.opts),
          case.name .. " split at " .. k)
      end
    end
  end)

  it("hostile streams fail with the same condition for random chunkings", function()
    rng_state = 0x1234567
    local poison = { "<!-- c -->", "<?pi?>", "&foo;", "\255", "\0", "&#1;", "<a></b>",
      "<zz:x/>", "\237\160\128", "]]>" }
    for round = 1, 80 do
      local s = gen_stream(rnd(6))
      local at = #data.header + rnd(#s - #data.header)
      -- insert the poison at a tag boundary so it is reached in content
      local lt = s:find("<", at, true) or #s + 1
      local bad = s:sub(1, lt - 1) .. pick(poison) .. s:sub(lt)
      local whole = events(lxmpp, { bad }, { max_stanza_size = 4096 })
      assert.matches("^error:", whole[#whole], "round " .. round .. ": " .. bad)
      for _ = 1, 4 do
        local chunks = split_at(bad, random_cuts(#bad, rnd(30)))
        assert.same(whole, events(lxmpp, chunks, { max_stanza_size = 4096 }), "round " .. round)
      end
      assert.same(whole, events(lxmpp, bytes(bad), { max_stanza_size = 4096 }))
    end
  end)

  it("a size limit hit in the middle of other violations reports the first one in byte order", function()
    local body = ("x"):rep(250)
    local s = data.header .. "<message><body>" .. body .. "<!-- late comment --></body></message>"
    for _, limit in ipairs({ 200, 260, 300, 600 }) do
      local whole = events(lxmpp, { s }, { max_stanza_size = limit })
      assert.same(whole, events(lxmpp, bytes(s), { max_stanza_size = limit }), "limit " .. limit)
      for k = 1, #s - 1, 7 do
        assert.same(whole, events(lxmpp, { s:sub(1, k), s:sub(k + 1) }, { max_stanza_size = limit }))
      end
    end
  end)
end)
