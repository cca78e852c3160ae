-- bench/route_inproc.lua: the embedded server's routing cost in process,
-- without network, TLS or parsing: a chat message from one bound session to
-- another's full JID through im:from_client (events, blocking, carbons,
-- archive hooks), delivered to a fake session. Best of 5 runs of N.
--
--   lua5.4 bench/route_inproc.lua [N [body]]
--
-- Without "body" the messages carry a chat state only, so nothing is
-- archived (XEP-0313 keeps messages with a body); with it, both accounts'
-- archives take every message.
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"

local N = math.tointeger(tonumber(arg[1] or "100000")) or 100000
local WITH_BODY = arg[2] == "body"

local srv = lxmpp.server({ domain = "example.test", listen = "127.0.0.1:0", users = { alice = "a", bob = "b" } })
assert(srv:start())
local delivered = 0
local function fake(user)
  local s = { user = user, bare = user .. "@example.test", resource = "r", full = user .. "@example.test/r",
    available = true, priority = 0, bound = true, authenticated = true }
  function s.send() delivered = delivered + 1; return true end
  function s.congested() return false end
  srv.sessions[s.bare] = { r = s }
  return s
end
local alice = fake("alice")
fake("bob")

local function one(i)
  local m = st.message({ from = alice.full, to = "bob@example.test/r", type = "chat", id = "m" .. i })
  if WITH_BODY then
    m:text_tag("body", "hello")
  else
    m:tag("active", { xmlns = "http://jabber.org/protocol/chatstates" }):up()
  end
  srv.im:from_client(alice, m)
end

for i = 1, 2000 do one(i) end   -- warm up
local best = math.huge
for _ = 1, 5 do
  collectgarbage()
  collectgarbage()
  local t0 = os.clock()
  for i = 1, N do one(i) end
  best = math.min(best, os.clock() - t0)
end
print(("%d messages%s: best of 5 %.3f s CPU, %.2f us/message (delivered %d)"):format(
  N, WITH_BODY and " with a body" or "", best, best / N * 1e6, delivered))
srv:stop()
