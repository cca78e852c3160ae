-- XEP-0050 ad-hoc commands, both ways.
--
-- Offering: c:add_command(node, name, handler, opts). Each execution runs
-- handler(cmd) as its own task; cmd:ask(form) sends a form stage and waits
-- for the requester's next step, so a multi-stage command is straight-line
-- code. What the handler returns completes the command (notes, a result
-- form). Only requesters `opts.allowed` admits see or run a command (default:
-- our own account); later stages are accepted only from the full JID that
-- started the session, with its sessionid, and only with the actions offered.
--
-- Running others': c:commands(to) lists them (disco#items on the commands
-- node), c:execute(to, node) starts one; a result steps on with
-- r:next(values), r:prev(), r:complete(values), r:cancel().

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local task = require "lxmpp.task"
local forms = require "lxmpp.forms"
local session = require "lxmpp.session"

local type, error, ipairs, pairs, tostring, pcall, setmetatable, table_sort =
  type, error, ipairs, pairs, tostring, compat.pcall, setmetatable, table.sort

local NS_COMMANDS = "http://jabber.org/protocol/commands"

local M = { NS_COMMANDS = NS_COMMANDS }

local MAX_SESSIONS = 256           -- running executions, all requesters
local MAX_PER_REQUESTER = 8
local ACTIONS = { next = true, prev = true, complete = true }
local NOTE_TYPES = { info = true, warn = true, error = true }

local function command_error(iq, etype, cond, specific)
  local e = st.error_reply(iq, etype, cond)
  if specific then e:get_child("error"):tag(specific, { xmlns = NS_COMMANDS }):up() end
  return e
end

-- the reply to a step: <command status=... sessionid=...> with notes,
-- actions and a form
local function step_reply(iq, sess, status, opts)
  local r = st.reply(iq):tag("command", { xmlns = NS_COMMANDS, node = sess.node, sessionid = sess.id,
    status = status })
  if status == "executing" then
    r:tag("actions", { execute = opts.default })
    for _, a in ipairs({ "prev", "next", "complete" }) do
      if opts.actions[a] then r:tag(a):up() end
    end
    r:up()
  end
  for _, n in ipairs(opts.notes or {}) do r:text_tag("note", n.text, { type = n.type }) end
  if opts.form then r:add_child(opts.form) end
  return r
end

local function check_notes(notes, fname)
  if notes == nil then return {} end
  if type(notes) == "string" then return { { type = "info", text = notes } } end
  if type(notes) ~= "table" then error(fname .. ": notes must be a string or a list", 4) end
  local out = {}
  for i, n in ipairs(notes) do
    if type(n) == "string" then n = { text = n } end
    if type(n) ~= "table" or type(n.text) ~= "string" or (n.type ~= nil and not NOTE_TYPES[n.type]) then
      error(fname .. ": note " .. i .. " must be a string or { type = info|warn|error, text = }", 4)
    end
    out[i] = { type = n.type or "info", text = n.text }
  end
  return out
end

---------------------------------------------------------------------------
-- one execution, as the handler sees it

local Cmd = {}
Cmd.__index = Cmd

-- Hands the reply for the pending request to the IQ task waiting for it.
function Cmd:respond(stanza)
  local p = self.pending
  self.pending = nil
  if p then p.waiter:wake(stanza) end
end

--- cmd:ask(form [, opts]) -> values, action | nil, "canceled" | nil, "timeout"
-- form: a forms layout (submissions are read and checked with it) or an <x/>
-- opts: actions = { "next", "prev", "complete" } (default { "next" }),
-- default = the action "execute" means (default: the last of actions),
-- notes = string or list.
function Cmd:ask(form, opts)
  opts = opts or {}
  local layout = forms.is_layout(form) and form or nil
  local x = layout and layout:form() or form
  if not st.is_stanza(x) or x.attr.xmlns ~= forms.xmlns then
    error("cmd:ask: expected a forms layout or a jabber:x:data <x/>", 2)
  end
  if not layout then
    -- an <x/> of the handler's: its fields' types read the submission,
    -- whose own types may be absent (XEP-0004 §3.3: inferred from context)
    local parsed = forms.parse(x)
    local ok, made = pcall(forms.new, parsed)
    if parsed and ok then layout = made end
  end
  local list = opts.actions or { "next" }
  local actions = {}
  for _, a in ipairs(list) do
    if not ACTIONS[a] then error("cmd:ask: unknown action " .. tostring(a), 2) end
    actions[a] = true
  end
  local default = opts.default or list[#list]
  if not actions[default] then error("cmd:ask: the default action must be one of the actions", 2) end
  local notes = check_notes(opts.notes, "cmd:ask")
  if not self.pending then return nil, self.ended or "canceled" end
  self.stage = { actions = actions, default = default }
  self:respond(step_reply(self.pending_iq, self, "executing",
    { actions = actions, default = default, notes = notes, form = x }))
  while true do
    local w = task.waiter("cmd:ask", 1)
    self.step_waiter = w
    local t = core.timer(self.timeout, w)
    local iq, action = w:wait()
    t:stop()
    self.step_waiter = nil
    if not iq then
      self.ended = self.ended or "timeout"
      self.close()
      return nil, self.ended
    end
    local sub = iq.tags[1]:get_child("x", forms.xmlns)
    if action == "prev" then return {}, "prev" end
    local values, msg = {}, nil
    if sub and layout then
      values, msg = layout:data(sub)
    elseif sub then                       -- an <x/> forms.parse refused: the submission's own types
      local parsed
      parsed, msg = forms.parse(sub)
      values = parsed and parsed.values
    end
    if values then return values, action end
    -- a submission that does not fit: say why, keep waiting at this stage
    self:respond(st.error_reply(iq, "modify", "bad-request", msg))
  end
end

---------------------------------------------------------------------------
-- the provider side

local function allowed(self, cmd, from)
  local a = cmd.allowed
  if a == true then return true end
  if type(a) == "function" then
    local ok, r = pcall(a, from)
    return ok and r == true
  end
  local bare = jid.bare(from)
  if type(a) == "table" then
    for _, j in ipairs(a) do
      if jid.equal(j, bare) then return true end
    end
    return false
  end
  return jid.equal(bare, self.bare_jid)
end

local function count_sessions(self, from)
  local all, mine = 0, 0
  for _, s in pairs(self.commands.sessions) do
    all = all + 1
    if s.from == from then mine = mine + 1 end
  end
  return all, mine
end

-- waits for the handler's answer to a step (bounded), then returns it
local function await(sess, iq)
  local w = task.waiter("command step", 1)
  sess.pending, sess.pending_iq = { waiter = w }, iq
  return w
end

local function start(self, iq, cmd, from)
  local all, mine = count_sessions(self, from)
  if all >= MAX_SESSIONS or mine >= MAX_PER_REQUESTER then
    return st.error_reply(iq, "wait", "resource-constraint")
  end
  local sess = setmetatable({ id = session.new_id(), node = cmd.node, from = from, timeout = cmd.timeout,
    client = self }, Cmd)
  self.commands.sessions[sess.id] = sess
  sess.close = function() self.commands.sessions[sess.id] = nil end
  local w = await(sess, iq)
  task.spawn(function()
    local ok, r = pcall(cmd.handler, sess)
    sess.close()
    if not sess.pending then return end          -- canceled or timed out meanwhile
    if not ok then
      self:log("error", "ad-hoc command %s failed: %s", cmd.node, tostring(r))
      sess:respond(st.error_reply(sess.pending_iq, "wait", "internal-server-error"))
      return
    end
    local notes, form = nil, nil
    if type(r) == "table" and not st.is_stanza(r) then notes, form = r.notes or r.note, r.form
    elseif st.is_stanza(r) then form = r
    else notes = r end
    local okn, checked = pcall(check_notes, notes, "command handler")
    if not okn then
      self:log("error", "ad-hoc command %s returned bad notes: %s", cmd.node, tostring(checked))
      checked = {}
    end
    sess:respond(step_reply(sess.pending_iq, sess, "completed", { notes = checked, form = form }))
  end)
  local t = core.timer(cmd.timeout, w)
  local reply = w:wait()
  t:stop()
  return reply or st.error_reply(iq, "wait", "remote-server-timeout")
end

local function step(self, iq, q, from)
  local sess = self.commands.sessions[q.attr.sessionid]
  if not sess or sess.from ~= from or sess.node ~= q.attr.node then
    return command_error(iq, "modify", "bad-request", "bad-sessionid")
  end
  local action = q.attr.action
  if action == "cancel" then
    sess.ended = "canceled"
    sess.close()
    -- a step still being worked on is answered as canceled too; what the
    -- handler returns later is dropped
    if sess.pending then sess:respond(step_reply(sess.pending_iq, sess, "canceled", {})) end
    if sess.step_waiter then sess.step_waiter:wake(nil) end
    return step_reply(iq, sess, "canceled", {})
  end
  if not sess.step_waiter or sess.pending then return st.error_reply(iq, "wait", "unexpected-request") end
  if action == nil or action == "execute" then action = sess.stage.default end
  if not sess.stage.actions[action] then return command_error(iq, "modify", "bad-request", "bad-action") end
  local w = await(sess, iq)
  sess.step_waiter:wake(iq, action)
  local t = core.timer(sess.timeout, w)
  local reply = w:wait()
  t:stop()
  return reply or st.error_reply(iq, "wait", "remote-server-timeout")
end

---------------------------------------------------------------------------
-- the requester side

local Result = {}
Result.__index = Result

local function read_result(self, to, r)
  local q = r:get_child("command", NS_COMMANDS)
  if not q then return nil, "the answer has no <command/>", "bad-request" end
  local res = setmetatable({ client = self, to = to, node = q.attr.node, sessionid = q.attr.sessionid,
    status = q.attr.status, notes = {}, actions = {} }, Result)
  local actions = q:get_child("actions")
  if actions then
    for a in actions:childtags() do if ACTIONS[a.name] then res.actions[a.name] = true end end
    res.default = actions.attr.execute
  end
  for n in q:childtags("note") do res.notes[#res.notes + 1] = { type = n.attr.type or "info", text = n:get_text() } end
  local x = q:get_child("x", forms.xmlns)
  if x then
    local form, msg = forms.parse(x)
    if not form then return nil, "the command sent a bad form: " .. msg, "bad-request" end
    res.form = form
  end
  return res
end

local function send_step(self, to, node, sessionid, action, x, timeout)
  local iq = st.iq({ type = "set", to = to }):tag("command", { xmlns = NS_COMMANDS, node = node,
    sessionid = sessionid, action = action })
  if x then iq:add_child(x) end
  local r, msg, cond, estanza = self:request(iq, timeout)
  if not r then return nil, msg, cond, estanza end
  return read_result(self, to, r)
end

local function submit(res, action, values, timeout)
  if res.status ~= "executing" then error("command: the command is " .. tostring(res.status), 3) end
  if values ~= nil and type(values) ~= "table" then error("command: values must be a table", 3) end
  local x
  if action ~= "cancel" and action ~= "prev" and res.form then
    -- the form is the peer's, its field types too: values that do not fit
    -- them are refused here (nothing sent), not raised out of the call
    local ok, sub = pcall(function() return forms.new(res.form):form(values or {}, "submit") end)
    if not ok then
      return nil, "the values do not fit the command's form: " .. tostring(sub):gsub("^.-lxmpp%.forms: ", ""),
        "not-acceptable"
    end
    x = sub
  end
  return send_step(res.client, res.to, res.node, res.sessionid, action, x, timeout)
end

--- r:next([values [, timeout]]) -> the next result | nil, message, condition
function Result:next(values, timeout) return submit(self, "next", values, timeout) end
--- r:prev([timeout])
function Result:prev(timeout) return submit(self, "prev", nil, timeout) end
--- r:complete([values [, timeout]])
function Result:complete(values, timeout) return submit(self, "complete", values, timeout) end
--- r:cancel([timeout])
function Result:cancel(timeout) return submit(self, "cancel", nil, timeout) end

-- The plugin object, c.commands (docs/api.md "Plugins"): .offered (node ->
-- command) and .sessions (id -> session) are ours; calling it as a method,
-- c:commands(to), is c.commands:list(to).
M.forwards = { add_command = "add", remove_command = "remove", execute = "execute" }

--- c.commands:add(node, name, handler [, { allowed =, timeout = }])
function M:add(node, name, handler, opts)
  if type(node) ~= "string" or node == "" then error("add_command: node must be a non-empty string", 2) end
  if type(name) ~= "string" then error("add_command: name must be a string", 2) end
  if type(handler) ~= "function" then error("add_command: handler must be a function", 2) end
  opts = opts or {}
  local a = opts.allowed
  if a ~= nil and a ~= true and type(a) ~= "table" and type(a) ~= "function" then
    error("add_command: allowed must be true, a list of JIDs or a function", 2)
  end
  local cmd = { node = node, name = name, handler = handler, allowed = a, timeout = opts.timeout or 300 }
  self.offered[node] = cmd
  local c = self.client
  c:disco_node(node, function(from, kind)
    if not from or not allowed(c, cmd, from) then return nil end
    if kind == "items" then return {} end
    return { identities = { { category = "automation", type = "command-node", name = name } },
      features = { NS_COMMANDS, forms.xmlns } }
  end)
end

--- c.commands:remove(node)
function M:remove(node)
  self.offered[node] = nil
  self.client:disco_node(node, nil)
end

--- c.commands:list([to [, timeout]]) -> { {jid=, node=, name=} } | nil, message, condition
function M:list(to, timeout)
  return self.client:disco_items(to, NS_COMMANDS, timeout)
end

--- c:commands([to [, timeout]]): the plugin object called as a client method
function M.__call(p, _, to, timeout) return p:list(to, timeout) end

--- c:execute(to, node [, timeout]) -> result | nil, message, condition
function M:execute(to, node, timeout)
  if type(to) ~= "string" or not jid.prep(to) then error("execute: invalid JID " .. tostring(to), 2) end
  if type(node) ~= "string" then error("execute: node must be a string", 2) end
  return send_step(self.client, to, node, nil, "execute", nil, timeout)
end

function M:init(c)
  self.offered, self.sessions = {}, {}
  c:add_feature(NS_COMMANDS)
  c:disco_node(NS_COMMANDS, function(from, kind)
    if kind == "info" then
      return { identities = { { category = "automation", type = "command-list" } }, features = { NS_COMMANDS } }
    end
    local items = {}
    for node, cmd in pairs(self.offered) do
      if from and allowed(c, cmd, from) then
        items[#items + 1] = { jid = c.jid, node = node, name = cmd.name }
      end
    end
    table_sort(items, function(a, b) return a.node < b.node end)
    return items
  end)
  c:handle_iq(NS_COMMANDS, function(iq)
    local q = iq.tags[1]
    local from = iq.attr.from and jid.prep(iq.attr.from)
    if iq.attr.type ~= "set" or q.name ~= "command" or not from then
      return st.error_reply(iq, "modify", "bad-request")
    end
    if q.attr.sessionid then return step(c, iq, q, from) end
    local cmd = self.offered[q.attr.node or ""]
    if not cmd then return st.error_reply(iq, "cancel", "item-not-found") end
    if not allowed(c, cmd, from) then return st.error_reply(iq, "auth", "forbidden") end
    if q.attr.action ~= nil and q.attr.action ~= "execute" then
      return command_error(iq, "modify", "bad-request", "bad-action")
    end
    return start(c, iq, cmd, from)
  end)
end

return M
