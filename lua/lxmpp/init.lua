-- lxmpp: an XMPP library for Lua 5.4 with a C core.
-- This file is the friendly face over lxmpp.core (C core, Lua API): it
-- gathers the submodules and gives the low-level stream parser its API name.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local stanza = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local task = require "lxmpp.task"
local client = require "lxmpp.client"
local component = require "lxmpp.component"
local signal = require "lxmpp.signal"

local type, error, pcall, tostring = type, error, compat.pcall, tostring

local lxmpp = {
  VERSION = "0.1.0",
  core = core,
  stanza = stanza,
  jid = jid,
  task = task,
  -- the coroutine runtime (docs/api.md "Tasks")
  run = task.run,
  spawn = task.spawn,
  sleep = task.sleep,
  step = task.step,
  stop = task.stop,
  -- signals and the clean shutdown (docs/api.md "Signals")
  on_signal = signal.on,
  shutdown = signal.shutdown,
  default_signals = signal.default_signals,
  -- sessions (docs/api.md "Clients and components")
  connect = client.connect,
  component = component.new,
  -- client plugins (docs/api.md "Plugins")
  register_plugin = client.register_plugin,
}

--- lxmpp.server(opts) -> server: the embedded server (docs/api.md "Embedded
-- server"); loaded on first use so clients do not pay for it.
function lxmpp.server(opts)
  return require("lxmpp.server").new(opts)
end

--- lxmpp.stream_parser(handlers, opts) -> parser
-- handlers: { stream_open = fn(attr), stanza = fn(stanza), stream_close = fn() }
-- opts: { max_stanza_size = 262144, max_depth = 64, max_attributes = 64,
--         max_children = 4096 }
-- parser:feed(bytes) -> true [, leftover] | nil, message, condition
-- parser:reset()  parser:close()
function lxmpp.stream_parser(handlers, opts)
  if type(handlers) ~= "table" then
    error("lxmpp.stream_parser: handlers must be a table", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("lxmpp.stream_parser: opts must be a table or nil", 2)
  end
  local ok, p = pcall(core.stream_parser, handlers, opts)
  if not ok then error("lxmpp.stream_parser: " .. tostring(p):gsub("^[^:]*:%d+: ", ""), 2) end
  return p
end

return lxmpp
