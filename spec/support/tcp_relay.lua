-- An in-process TCP relay on loopback (lxmpp.net), between a client and a
-- server's port, for transport specs: it counts the connections it
-- accepts and lets a spec cut or stall a link when the bytes going one way
-- contain a marker, so a fault falls on a chosen request or answer.
--
--   local r = tcp_relay.start(target_port)
--   r.port, r.accepted, r.max_open      -- where to connect; connections so far; most open at once
--   r:open()                            -- links open now
--   r:on_text("up" | "down", "marker", "cut" | "stall")   -- once, on the next link whose bytes
--                                       -- (client to server: up) contain the marker
--   r:stall_busy()                      -- stall links with a request that has no answer yet
--                                       -- (a stalled link forwards nothing and stays open to the
--                                       -- client whatever the server does: a half-open link)
--   r:sent()                            -- every byte clients sent so far
--   r.refuse = true                     -- cut every new connection at once (still counted)
--   r:close()                           -- stop listening, cut every link
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"

local M = {}

local Relay = {}
Relay.__index = Relay

function M.start(target_port)
  local r = setmetatable({ target = target_port, accepted = 0, max_open = 0, links = {}, rules = {}, up_text = {} },
    Relay)
  r.l = assert(net.listen("127.0.0.1", 0, function(down) r:accept(down) end))
  r.port = r.l:port()
  return r
end

function Relay:open()
  local n = 0
  for _ in pairs(self.links) do n = n + 1 end
  return n
end

function Relay:cut(link)
  if link.gone then return end
  link.gone = true
  self.links[link] = nil
  if not link.down.closed then link.down:abort() end
  if link.up and not link.up.closed then link.up:abort() end
end

function Relay:accept(down)
  self.accepted = self.accepted + 1
  local link = { down = down, pending = {}, text = { up = "", down = "" }, busy = false }
  self.links[link] = true
  if self:open() > self.max_open then self.max_open = self:open() end
  down:on("data", function(b) self:pass(link, "up", b) end)
  for _, ev in ipairs({ "eof", "read-error", "closed" }) do down:on(ev, function() self:cut(link) end) end
  down:raw()
  if self.refuse then return self:cut(link) end
  lxmpp.spawn(function()
    local up = net.connect("127.0.0.1", self.target, 5)
    if not up or link.gone then
      if up then up:abort() end
      return self:cut(link)
    end
    link.up = up
    up:on("data", function(b) self:pass(link, "down", b) end)
    for _, ev in ipairs({ "eof", "read-error", "closed" }) do
      up:on(ev, function()
        -- a stalled link stays open on the client's side: a half-open link
        if link.stalled then up:abort() else self:cut(link) end
      end)
    end
    up:raw()
    for _, b in ipairs(link.pending) do up:write(b) end
    link.pending = {}
  end)
end

function Relay:pass(link, dir, bytes)
  if link.gone or link.stalled then return end
  link.busy = dir == "up"
  link.text[dir] = link.text[dir] .. bytes
  if dir == "up" then self.up_text[#self.up_text + 1] = bytes end
  for i, rule in ipairs(self.rules) do
    if rule.dir == dir and link.text[dir]:find(rule.marker, 1, true) then
      table.remove(self.rules, i)
      if rule.action == "cut" then return self:cut(link) end
      link.stalled = true
      return
    end
  end
  if dir == "down" then return link.down:write(bytes) end
  if link.up then link.up:write(bytes) else link.pending[#link.pending + 1] = bytes end
end

function Relay:on_text(dir, marker, action)
  self.rules[#self.rules + 1] = { dir = dir, marker = marker, action = action }
end

function Relay:stall_busy()
  for link in pairs(self.links) do
    if link.busy then link.stalled = true end
  end
end

-- All the bytes clients sent, over every link so far.
function Relay:sent() return table.concat(self.up_text) end

function Relay:close()
  self.l:close()
  for link in pairs(self.links) do self:cut(link) end
end

return M
