-- The client's stream restart after SASL success (client.lua, session.lua)
-- against a scripted server that puts whitespace between <success/> and
-- its new stream header, as a server may (RFC 6120 §11.7): the client's
-- fresh parser must skip it, and still refuse anything else there. (Bytes
-- in the same read as <success/> never reach the new parser: the client
-- is paused at <success/> and conn:restart() outside a dispatch drops the
-- rest of that read; only the own-write cases reach the new parser.)
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local clients = require "spec.support.clients"
local clean = require "spec.support.clean"

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
local HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
  "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='s%d' version='1.0'>"

-- A server that offers ANONYMOUS, and after <success/> writes `between`
-- (in the same write as <success/> when `same`, else on its own) before the
-- header of the restarted stream.
local function scripted(between, same)
  local n = 0
  return assert(net.listen("127.0.0.1", 0, function(conn)
    local authed = false
    conn:on("open", function()
      n = n + 1
      if authed and not same then conn:write(between) end
      conn:write(HEADER:format(n))
      if authed then
        conn:write("<stream:features><bind xmlns='" .. NS_BIND .. "'/></stream:features>")
      else
        conn:write("<stream:features><mechanisms xmlns='" .. NS_SASL .. "'><mechanism>ANONYMOUS</mechanism>" ..
          "</mechanisms></stream:features>")
      end
    end)
    conn:on("stanza", function(s)
      if s.name == "auth" then
        authed = true
        conn:write("<success xmlns='" .. NS_SASL .. "'/>" .. (same and between or ""))
        conn:restart()
      elseif s.name == "iq" and s:get_child("bind", NS_BIND) then
        conn:write("<iq type='result' id='" .. s.attr.id .. "'><bind xmlns='" .. NS_BIND ..
          "'><jid>anon@example.test/r</jid></bind></iq>")
      end
    end)
    conn:on("stream-close", function() conn:write("</stream:stream>") conn:close() end)
    conn:on("eof", function() conn:abort() end)
    conn:on("read-error", function() conn:abort() end)
    conn:parse()
  end))
end

local function connect(listener)
  return lxmpp.connect({ jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1",
    port = listener:port(), tls = "none", reconnect = false, stream_management = false,
    logger = function() end })
end

local function run(fn)
  local ok, err = pcall(lxmpp.run, fn)
  clients.kill_all()
  local cleaned, left = pcall(clean)
  if not ok then error(err, 0) end
  if not cleaned then error(left, 0) end
end

describe("client stream restart", function()
  for _, between in ipairs({ "\n", "\r\n", " \t\r\n " }) do
    for _, same in ipairs({ true, false }) do
      it(("binds when %q comes between <success/> and the new header (%s)"):format(between,
          same and "same write" or "own write"), function()
        run(function()
          local l = scripted(between, same)
          local c, msg = connect(l)
          l:close()
          assert(c, msg)
          assert.equal("anon@example.test/r", c.jid)
          c:close()
        end)
      end)
    end
  end

  it("fails with not-well-formed when junk comes there instead", function()
    run(function()
      local l = scripted("\nx", false)
      local c, _, cond = connect(l)
      l:close()
      assert.is_nil(c)
      assert.equal("not-well-formed", cond)
    end)
  end)
end)
