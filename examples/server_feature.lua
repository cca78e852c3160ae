-- A feature of the embedded server in a file of its own, on its event bus
-- (docs/server.md, "Adding a server feature"): the server's domain answers
-- <fortune xmlns='urn:example:fortune'/> requests, and messages from our
-- users whose body holds a banned word are refused (not-acceptable) instead
-- of delivered.
--
--   local feature = require "server_feature"
--   local unhook = feature.setup(srv, { banned = { "spam" } })   -- later: unhook()
--
-- Run alone, it serves example.test on 127.0.0.1:5222 (users alice and bob,
-- password "secret") with the feature on:
--
--   lua5.4 examples/server_feature.lua

local lxmpp = require "lxmpp"
local st = lxmpp.stanza

local M = { NS = "urn:example:fortune" }

local FORTUNES = { "A fine day for a release.", "Read the RFC first." }

--- feature.setup(srv, opts) -> unhook(): hooks the feature's handlers on
-- srv (started or not); opts.banned: words a message may not hold.
function M.setup(srv, opts)
  local banned = opts and opts.banned or { "spam" }
  local served = 0

  -- an IQ to the server's domain, keyed by its payload: <xmlns>:<name>
  local function fortune(ev)
    local iq = ev.stanza
    if iq.attr.type ~= "get" then
      srv:reply(ev, st.error_reply(iq, "cancel", "bad-request", "ask with a get"))
      return true
    end
    served = served + 1
    srv:reply(ev, st.reply(iq):text_tag("fortune", FORTUNES[(served - 1) % #FORTUNES + 1], { xmlns = M.NS }))
    return true                                    -- handled: no service-unavailable
  end

  -- a message of one of our users, before the server routes it
  local function filter(ev)
    local body = ev.stanza:get_child_text("body")
    for _, word in ipairs(banned) do
      if body and body:lower():find(word, 1, true) then
        srv:bounce(ev.stanza, "modify", "not-acceptable", "that word is not welcome here")
        return true                                -- handled: not delivered
      end
    end
    return nil                                     -- on to the next handler, then routing
  end

  local ids = {
    srv:hook("iq/host/" .. M.NS .. ":fortune", fortune),
    srv:hook("pre-message/bare", filter, 10),      -- before other handlers of priority < 10
    srv:hook("pre-message/full", filter, 10),
  }
  return function()
    for _, id in ipairs(ids) do srv:unhook(id) end
  end
end

if arg and arg[0] and arg[0]:match("server_feature%.lua$") then   -- run alone
  lxmpp.run(function()
    local srv = lxmpp.server{ domain = "example.test", listen = { "127.0.0.1:5222" },
      users = { alice = "secret", bob = "secret" }, log_level = "info" }
    M.setup(srv, { banned = { "spam" } })
    assert(srv:start())
  end)
end

return M
