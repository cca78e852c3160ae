-- Scenarios the interop specs run the same way against each real server
-- (spec/interop/client_prosody_spec.lua, spec/interop/ejabberd_spec.lua):
-- each takes the running server (spec/support/prosody.lua or ejabberd.lua:
-- .component, .component_secret, .component_port) and the spec's client
-- options, and runs inside lxmpp.run.
--
--   it("...", function() run(function() scenarios.component_round_trip(srv, opts("alice")) end) end)
local compat = require "lxmpp.compat"
local assert = require "luassert"
local lxmpp = require "lxmpp"
local st = lxmpp.stanza

local M = {}

local function component(srv, secret)
  return lxmpp.component({ jid = srv.component, secret = secret, host = "127.0.0.1", port = srv.component_port })
end

-- XEP-0114: the component authenticates with the handshake; a client's
-- message reaches it, its answer (a component may send from any JID at its
-- domain) reaches the client, and the server answers its ping.
function M.component_round_trip(srv, alice_opts)
  local comp = component(srv, srv.component_secret)
  local held = {}
  -- a failed assertion closes both all the same: a component left bound
  -- would make the server refuse the next spec's component
  local ok, err = compat.pcall(function()          -- (compat: it waits, on 5.1 too)
    assert.is_true(comp:connect())
    M.round_trip(srv, comp, alice_opts, held)
  end)
  if held.alice then held.alice:close() end
  comp:close()
  if not ok then error(err, 0) end
end

-- The exchange of component_round_trip (held.alice: the client it logs in).
function M.round_trip(srv, comp, alice_opts, held)
  local got = lxmpp.task.waiter()
  comp:on("message", function(m) got:wake(m) end)
  local alice = assert(lxmpp.connect(alice_opts))
  held.alice = alice
  alice:send_message("echo@" .. srv.component, "to the gateway")
  local m = got:wait()
  assert.equal("to the gateway", m:get_child_text("body"))
  assert.equal(alice.jid, m.attr.from)
  local back = lxmpp.task.waiter()
  alice:on("message", function(r) back:wake(r) end)
  comp:send(st.message({ to = alice.jid, from = "echo@" .. srv.component, type = "chat" }, "echoed"))
  local r = back:wait()
  assert.equal("echoed", r:get_child_text("body"))
  assert.equal("echo@" .. srv.component, r.attr.from)
  local pong = assert(comp:request(st.iq({ type = "get", to = "example.test", from = srv.component })
    :tag("ping", { xmlns = "urn:xmpp:ping" })))
  assert.equal("result", pong.attr.type)
end

-- XEP-0114: a wrong secret fails the handshake with not-authorized.
function M.component_wrong_secret(srv)
  local ok, _, cond = component(srv, "wrong"):connect()
  assert.is_nil(ok)
  assert.equal("not-authorized", cond)
end

return M
