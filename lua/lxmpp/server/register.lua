-- lxmpp.server.register: in-band registration (XEP-0077) on the embedded
-- server: accounts made before authentication (when the `registration`
-- option allows it), password changes and account removal after. It hooks
-- jabber:iq:register requests of an account to itself and to the server's
-- domain; c2s.lua hands it those of a stream not authenticated yet.

local st = require "lxmpp.stanza"
local throttle = require "lxmpp.server.throttle"
local core = require "lxmpp.core"

local setmetatable, math_ceil = setmetatable, math.ceil

local M = {}
local NS_REGISTER = "jabber:iq:register"
M.NS = NS_REGISTER

local R = {}
R.__index = R

--- register.new(im) -> the registration service of the IM core, hooked.
function M.new(im)
  local self = setmetatable({ im = im, srv = im.srv, domain = im.srv.domain }, R)
  local srv = self.srv
  im:hook("iq/self/" .. NS_REGISTER, function(ev) self:iq(ev.origin, ev.stanza); return true end)
  im:hook("iq/host/" .. NS_REGISTER, function(ev)   -- only from one of our own sessions
    local sess = ev.stanza.attr.from and srv:session(ev.stanza.attr.from)
    if not sess then return nil end
    self:iq(sess, ev.stanza)
    return true
  end)
  im:hook("disco-info/host", function(ev)
    if srv.registration then ev.reply:tag("feature", { var = NS_REGISTER }):up() end
  end)
  return self
end

local function register_form(iq, instructions)
  return st.reply(iq):tag("query", { xmlns = NS_REGISTER })
    :text_tag("instructions", instructions):tag("username"):up():tag("password"):up()
end

--- jabber:iq:register on a stream: before authentication (only when
-- registration is enabled) it creates accounts; after, it changes the
-- password or removes the account.
function R:iq(sess, iq)
  local srv, q = self.srv, iq.tags[1]
  local send = function(r) sess:send(r) end
  if iq.attr.type == "get" then
    if sess.authenticated then
      local r = register_form(iq, "Change your password or remove your account.")
      r:tag("registered"):up()
      return send(r)
    end
    return send(register_form(iq, "Choose a user name and password."))
  end
  if sess.authenticated then
    if q:get_child("remove") then
      send(st.reply(iq))
      srv:remove_user(sess.user)
      return
    end
    local user, pw = q:get_child_text("username"), q:get_child_text("password")
    if not pw or pw == "" or (user and srv:account_name(user) ~= sess.user) then
      return send(st.error_reply(iq, "modify", "bad-request", "give your own user name and a new password"))
    end
    local ok, err = srv:set_password(sess.user, pw, sess)   -- the other sessions end
    if not ok then return send(st.error_reply(iq, "modify", "not-acceptable", err)) end
    return send(st.reply(iq))
  end
  if srv.auth then
    return send(st.error_reply(iq, "cancel", "not-allowed", "accounts are managed by the host application"))
  end
  local user, pw = q:get_child_text("username"), q:get_child_text("password")
  local node = user and srv:account_name(user)
  if not node or not pw or pw == "" then
    return send(st.error_reply(iq, "modify", "not-acceptable", "a valid user name and a password are required"))
  end
  if srv.reserved[node] then   -- (docs/server.md, "Throttles")
    return send(st.error_reply(iq, "cancel", "conflict", "that user name is reserved"))
  end
  if srv.store:get_account(node) then
    return send(st.error_reply(iq, "cancel", "conflict", "that user name is taken"))
  end
  -- registrations per address and time (server/throttle.lua); a refused
  -- name costs nothing, only an account made counts
  local addr, now = throttle.key(sess.ip), core.now()
  local allowed, wait = srv.registrations:allowed(addr, now)
  if not allowed then
    srv:log("warn", "refused a registration from %s: too many from that address", sess.ip)
    return send(st.error_reply(iq, "wait", "resource-constraint",
      ("too many accounts registered from your address: try again in %d seconds"):format(math_ceil(wait))))
  end
  local ok, err = srv:add_user(node, pw)
  if not ok then return send(st.error_reply(iq, "modify", "not-acceptable", err)) end
  srv.registrations:count(addr, now)
  srv:log("info", "registered %s@%s from %s", node, self.domain, sess.ip)
  return send(st.reply(iq))
end

return M
