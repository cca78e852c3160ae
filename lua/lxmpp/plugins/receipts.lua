-- XEP-0184 message delivery receipts: once asked to (request = true), every
-- message with a body we send (not groupchat) asks for a receipt; a receipt is reported as a "receipt"
-- event only when it comes from the entity the message went to (bare JIDs
-- compared) and names a message we sent; messages that ask for a receipt
-- are answered automatically.
--
--   c:on("receipt", function(id, from, stanza) end)
--   c:set_receipts{ request = true, answer = true }
--   (request defaults to false: each receipt is one more stanza per message;
--   answer defaults to true, as the XEP asks of whoever supports it)

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"
local bounded = require "lxmpp.bounded"

local type, error, tostring = type, error, tostring

local NS_RECEIPTS = "urn:xmpp:receipts"
local MAX_WAITING = 1024     -- sent messages whose receipt we still accept

local M = { NS_RECEIPTS = NS_RECEIPTS }

session.add_event("receipt")

function M.install(Client)
  require("lxmpp.plugins.outgoing").install(Client)

  --- c:set_receipts{ request = bool, answer = bool }
  function Client:set_receipts(opts)
    if type(opts) ~= "table" then error("set_receipts: expected a table", 2) end
    if opts.request ~= nil then self.receipts_request = opts.request == true end
    if opts.answer ~= nil then self.receipts_answer = opts.answer == true end
  end

  local function remember(self, id, to)
    local w = self.receipts_waiting
    if w:get(id) == nil then w:put(id, jid.bare(to)) end
  end

  local function on_message(self, m)
    local from = m.attr.from and jid.prep(m.attr.from)
    local received = m:get_child("received", NS_RECEIPTS)
    if received and from then
      local id = received.attr.id
      local to = id and self.receipts_waiting:get(id)
      if to and jid.equal(to, jid.bare(from)) then
        self.receipts_waiting:delete(id)
        self:fire_user("receipt", id, from, m)
      else
        if self.debug then self:log("debug", "ignored a receipt for %s from %s", tostring(id), from) end
      end
    end
    if self.receipts_answer and from and m.attr.id and m:get_child("request", NS_RECEIPTS)
        and m.attr.type ~= "groupchat" and m.attr.type ~= "error" then
      self:send(st.message({ to = from, id = session.new_id(), type = m.attr.type })
        :tag("received", { xmlns = NS_RECEIPTS, id = m.attr.id }):up())
    end
  end

  Client.add_setup(function(self)
    self.receipts_request, self.receipts_answer = false, true
    self.receipts_waiting = bounded.new(MAX_WAITING)
    self:add_feature(NS_RECEIPTS)
    self.bus:add("stanza-out", function(s)
      if s.name == "message" and self.receipts_request and s.attr.to and s.attr.type ~= "groupchat"
          and s.attr.type ~= "error" and s:get_child("body") and not s:get_child("request", NS_RECEIPTS) then
        if not s.attr.id then s.attr.id = session.new_id() end
        s:add_direct_child(st.stanza("request", { xmlns = NS_RECEIPTS }))
        remember(self, s.attr.id, s.attr.to)
      end
    end)
    self:hook_child("message", NS_RECEIPTS, function(s) on_message(self, s) end)
  end)
  return Client
end

return M
