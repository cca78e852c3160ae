-- The stream parser keeps recent short strings (names, namespaces, attribute
-- values up to 40 bytes) in a per-state cache keyed by their first and last
-- 8 bytes. Whatever it holds, every stanza must carry exactly the strings it
-- was sent, and the cache must not show in the tables.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"

local H = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
  .. "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"

local function parse_all(xml)
  local got = {}
  local p = lxmpp.stream_parser({ stanza = function(s) got[#got + 1] = s end })
  assert(p:feed(H .. xml))
  return got
end

-- Strings of every length around the cache's limits whose first and last 8
-- bytes are equal and that differ only in one middle byte.
local function lookalikes()
  local out = {}
  for len = 1, 45 do
    for pos = 1, len do
      local t = {}
      for i = 1, len do t[i] = i == pos and "b" or "a" end
      out[#out + 1] = table.concat(t)
    end
  end
  return out
end

describe("stream parser string cache", function()
  it("gives back each attribute value exactly, look-alikes included", function()
    local values = lookalikes()
    local parts = {}
    for round = 1, 3 do -- a string is cached the second time in a row it misses
      for i, v in ipairs(values) do
        parts[#parts + 1] = ("<m n='%d' v='%s' r='%d'/>"):format(i, v, round)
      end
    end
    local got = parse_all(table.concat(parts))
    assert.equal(3 * #values, #got)
    for k, s in ipairs(got) do
      local i = tonumber(s.attr.n)
      assert.equal(values[i], s.attr.v, "stanza " .. k)
      assert.equal(("%d"):format(compat.idiv(k - 1, #values) + 1), s.attr.r)
    end
  end)

  it("tells apart many strings that share their first bytes and length", function()
    local parts, values = {}, {}
    for i = 1, 3000 do
      for _, len in ipairs({ 12, 20, 40 }) do
        local v = ("a"):rep(len - 8) .. ("%08d"):format(i)
        values[#values + 1] = v
        -- twice in a row, so that the cache takes it
        parts[#parts + 1] = ("<m v='%s'/><m v='%s'/>"):format(v, v)
      end
    end
    -- "abab...", 8 to 16 bytes: the first and last 8 bytes are the same for
    -- every other length, only the length tells them apart
    local chars = "abcdefghijklmnopqrstuvwxyz"
    for x in chars:gmatch(".") do
      for y in chars:gmatch(".") do
        for len = 8, 16 do
          local v = (x .. y):rep(8):sub(1, len)
          values[#values + 1] = v
          parts[#parts + 1] = ("<m v='%s'/><m v='%s'/>"):format(v, v)
        end
      end
    end
    local got = parse_all(table.concat(parts))
    assert.equal(2 * #values, #got)
    for k, s in ipairs(got) do
      assert.equal(values[compat.idiv(k + 1, 2)], s.attr.v)
    end
  end)

  it("gives back element names and namespaces exactly", function()
    local names = {}
    for len = 1, 45 do
      names[#names + 1] = ("x"):rep(len)
      names[#names + 1] = ("x"):rep(len - 1) .. "y"
      names[#names + 1] = "y" .. ("x"):rep(len - 1)
    end
    local parts = {}
    for _ = 1, 3 do
      for i, name in ipairs(names) do
        parts[#parts + 1] = ("<%s xmlns='urn:%s'><c xmlns='urn:%s:%d'/></%s>"):format(name, name, name, i, name)
      end
    end
    local got = parse_all(table.concat(parts))
    assert.equal(3 * #names, #got)
    for k, s in ipairs(got) do
      local i = (k - 1) % #names + 1
      assert.equal(names[i], s.name)
      assert.equal("urn:" .. names[i], s.attr.xmlns)
      assert.equal(("urn:%s:%d"):format(names[i], i), s.tags[1].attr.xmlns)
    end
  end)

  it("keeps the usual shape: only name, attr, tags and the children", function()
    local got = parse_all("<message to='a@b' type='chat'><body>hi</body></message>"
      .. "<message to='a@b' type='chat'><body>hi</body></message>")
    for _, s in ipairs(got) do
      local keys = {}
      for k in next, s do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      assert.same({ "1", "attr", "name", "tags" }, keys)
      assert.equal(1, compat.rawlen(s))
      assert.same({ to = "a@b", type = "chat" }, s.attr)
      assert.equal(rawget(s, 1), rawget(s.tags, 1))
    end
  end)

  it("serves stanza.parse (one element) from the same cache, exactly", function()
    local parse = lxmpp.stanza.parse
    for _ = 1, 3 do
      for _, id in ipairs({ "aaaaaaaabaaaaaaaa", "aaaaaaaacaaaaaaaa" }) do
        local st = assert(parse("<iq xmlns='jabber:client' id='" .. id .. "' type='get'/>"))
        assert.equal(id, st.attr.id)
        assert.equal("get", st.attr.type)
      end
    end
  end)
end)
