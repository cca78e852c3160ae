-- The automatic archive catch-up after a Bind2 login (client side): what
-- makes a Bind2 client lose no message sent while it was offline.
--
-- A Bind2 bind has the server clear, unsent, the offline messages its
-- archive holds, "as they will be provided by MAM" (XEP-0386 §"Performing
-- the bind"). So the client keeps an anchor: the id (and time) of the last
-- entry of its own archive it has seen, from the XEP-0359 <stanza-id/>
-- whose `by` is our bare JID (XEP-0359 §4: the server strips any other
-- claiming that `by`; a stanza-id by anyone else is not an id of our
-- archive) on the messages it gets, and from what a catch-up fetched. The
-- anchor is kept in client.login.archive = { id =, stamp = }, saved with
-- the stream management state (features/sm.lua, SM:state), so that it
-- outlives the process when a store is used (lxmpp.state_file).
--
-- features/sasl2.lua asks for Bind2 by default only when there is an
-- anchor (M.anchored); otherwise the classic RFC 6120 bind follows the
-- SASL2 success on the same stream (XEP-0388 §2.6.1) and the server
-- delivers the offline messages as usual (RFC 6121 §8.5.2.1.1).
--
-- After a Bind2 bind (M.bound; not after an XEP-0198 resumption, where
-- nothing was lost) whose <bound/> metadata (XEP-0313 §"Archive
-- metadata"; asked for when <bound/> has none) ends with another id than
-- the anchor, the catch-up (M.run)
-- starts when the session's initial presence is sent (c:send, or the
-- presence a reconnection restores), as the server's offline messages
-- would come: it fetches our archive after the anchor (XEP-0313 with
-- XEP-0059 paging: at most MAX_MESSAGES messages in at most MAX_PAGES
-- pages) and delivers each message sent to our account as a "message"
-- event: the archived <message/> with an XEP-0203 <delay/>, in archive
-- order. Live "message" (and "stanza") events wait (at most MAX_HELD)
-- until it ends. When the archive no longer holds the anchor
-- (item-not-found: its cap dropped it), the fetch starts at the anchor's
-- time if known, else nothing more is fetched (a warning). A message is
-- delivered once: the archive ids delivered are remembered (the last
-- SEEN_MAX), and a message carrying one of them is not delivered again.
--
-- The anchor's time is the server's where we have it (the archive's
-- <delay/> on what a catch-up fetched); a live message carries none we
-- can trust (anyone may add a <delay/>), so its time is ours minus
-- CLOCK_MARGIN: a fallback from it starts early rather than late, and
-- what it fetches twice is not delivered twice.
--
-- A catch-up that does not finish (the bounds, a failed query) pins the
-- anchor (archive.gap = true, saved): at the last entry fetched, and live
-- messages no longer move it, so the next Bind2 login (a reconnection
-- that does not resume, or a restart) goes on from there; only a
-- catch-up that finishes unpins it. The archive ids of the messages
-- delivered live while pinned (the last PINNED_SEEN) are saved with it
-- (archive.seen), so that the next catch-up, which fetches them again,
-- does not deliver them again after a restart. The application hears of
-- it ("catch-up-incomplete", the id to go on after, why).

local compat = require "lxmpp.compat"
local jid = require "lxmpp.jid"
local task = require "lxmpp.task"
local fifo = require "lxmpp.fifo"

local type, tostring, ipairs, os_time, math_floor, table_remove = type, tostring, ipairs, os.time, math.floor,
  table.remove

local NS_SID = "urn:xmpp:sid:0"
local NS_CARBONS = "urn:xmpp:carbons:2"
local NS_FORWARD = "urn:xmpp:forward:0"
local NS_DELAY = "urn:xmpp:delay"

local M = {
  MAX_MESSAGES = 1000,     -- fetched by one catch-up
  PAGE = 100,              -- asked for in one query
  MAX_PAGES = 20,          -- queries of one catch-up, whatever the server says
  MAX_HELD = 1000,         -- live message events held meanwhile
  SEEN_MAX = 2000,         -- archive ids remembered against duplicates
  TIMEOUT = 30,            -- seconds per query
  CLOCK_MARGIN = 300,      -- seconds taken off our clock for a live message's time
  PINNED_SEEN = 200,       -- ids delivered live while pinned, kept in the saved state
}

-- Our archive's id on a message: its <stanza-id by='our bare JID'/>.
local function archive_id(c, m)
  for s in m:childtags("stanza-id", NS_SID) do
    local id = s.attr.id
    if s.attr.by and jid.equal(s.attr.by, c.bare_jid) and type(id) == "string" and id ~= "" then return id end
  end
  return nil
end

local function enabled(c)
  return c.opts.mam_catch_up ~= false and c.node ~= nil
end

--- catchup.anchored(c) -> whether c may bind with Bind2 by default: it
-- has an anchor to catch up from, and the catch-up is on.
function M.anchored(c)
  return enabled(c) and c.login.archive ~= nil
end

local function save(c)
  if c.sm then c.sm:save() end
end

local function set_anchor(c, id, stamp, gap, seen_ids)
  c.login.archive = { id = id, stamp = stamp and math_floor(stamp), gap = gap or nil, seen = gap and seen_ids or nil }
end

-- An archive id delivered live while the anchor is pinned: kept with it.
local function pinned_seen(a, id)
  local list = a.seen or {}
  list[#list + 1] = id
  while #list > M.PINNED_SEEN do table_remove(list, 1) end
  a.seen = list
end

-- Remembers an archive id delivered; true when it was already.
local function seen(c, id)
  local set, order = c.catchup_seen, c.catchup_order
  if set[id] then return true end
  set[id] = true
  order:push(id)
  if order.n > M.SEEN_MAX then set[order:pop()] = nil end
  return false
end

-- An incoming stanza (before stream management counts and saves it): the
-- anchor moves to its archive id, or to the one of a carbon copy from our
-- own account (XEP-0280 §"Security Considerations"). While a catch-up is
-- due or running the anchor stays where the catch-up starts; the newest
-- live id is applied when it succeeds.
local function incoming(c, s)
  if s.name ~= "message" then return nil end
  local id = archive_id(c, s)
  if not id and (s.attr.from == nil or jid.equal(s.attr.from, c.bare_jid)) then
    for w in s:childtags(nil, NS_CARBONS) do
      local fwd = (w.name == "received" or w.name == "sent") and w:get_child("forwarded", NS_FORWARD)
      local inner = fwd and fwd:get_child("message", "jabber:client")
      id = inner and archive_id(c, inner)
      if id then break end
    end
  end
  if not id then return nil end
  local run, a = c.catchup, c.login.archive
  -- no server time for a live message: ours, early by CLOCK_MARGIN
  local stamp = os_time() - M.CLOCK_MARGIN
  if run then                         -- due or running
    local live = run.live
    live[#live + 1] = { id = id, stamp = stamp }
    if #live > M.MAX_HELD then table_remove(live, 1) end
    return nil
  end
  if a and a.gap then                 -- pinned: the anchor stays, the id is remembered
    pinned_seen(a, id)
  else
    set_anchor(c, id, stamp)
  end
  if not (c.sm and c.sm.enabled) then save(c) end   -- (else sm:incoming saves right after)
  return nil
end

--- catchup.init(c): the per-client part (client.lua).
function M.init(c)
  c.catchup_seen, c.catchup_order = {}, fifo.new()
  c.bus:add("stanza-in", function(s) return incoming(c, s) end, 1001)
  -- the session's initial presence starts a catch-up that is due
  c.bus:add("stanza-out", function(s)
    if s.name == "presence" and s.attr.to == nil and s.attr.type == nil then M.start(c) end
  end)
end

--- catchup.bound(c, bind2): after a bind (bind2: a Bind2 one, its
-- metadata in c.archive_metadata). A catch-up is due when the archive's
-- newest entry is not our anchor.
function M.bound(c, bind2)
  c.catchup = nil
  if not bind2 or not enabled(c) then return end
  local anchor, md = c.login.archive, c.archive_metadata
  if not anchor then return end
  -- (no metadata in <bound/>: the catch-up asks the archive for it)
  local newest = md and md["end"] and md["end"].id
  if md and (not newest or newest == anchor.id) then
    if anchor.gap then            -- nothing past a pinned anchor: nothing missing
      set_anchor(c, anchor.id, anchor.stamp)
      save(c)
    end
    return
  end
  -- what was delivered live while pinned is not delivered again
  for _, id in ipairs(anchor.seen or {}) do seen(c, id) end
  -- held: live message events; live: the archive ids that came live
  -- meanwhile; fetched: the ids the catch-up fetched
  c.catchup = { due = true, anchor = anchor, newest = newest, held = {}, live = {}, fetched = {} }
end

--- catchup.start(c): starts the catch-up that is due, in its own task.
function M.start(c)
  local run = c.catchup
  if not (run and run.due) then return end
  run.due, run.running = false, true
  task.spawn(M.run, c, run)
end

-- Delivers a message's events now: the routing of an incoming message
-- (session.lua, I.route: "stanza", then "message"), minus what was
-- delivered already.
local function deliver(c, m, fire)
  local id = archive_id(c, m)
  if id and seen(c, id) then
    if c.debug then c:log("debug", "not delivering archive entry %s again", id) end
    return
  end
  fire(c, "stanza", m)
  fire(c, "message", m)
end

--- catchup.message(c, m, fire): a live message's "stanza" and "message"
-- events (client.lua's fire_user, which leaves a message's "stanza" to
-- this): held during a catch-up, never one delivered already.
function M.message(c, m, fire)
  local run = c.catchup
  if run and run.running then
    local held = run.held
    if #held < M.MAX_HELD then
      held[#held + 1] = m
      return
    end
    if not run.overflow then
      run.overflow = true
      c:log("warn", "more than %d messages came during the archive catch-up: delivering them now", M.MAX_HELD)
    end
  end
  deliver(c, m, fire)
end

-- Is an archived message one the server would have delivered to us
-- offline? (sent to our account; not our own sent ones, which our archive
-- keeps too; not groupchat or error)
local function for_us(c, m)
  local to, typ = m.attr.to, m.attr.type
  return to ~= nil and jid.equal(jid.bare(to) or "", c.bare_jid) and typ ~= "groupchat" and typ ~= "error"
end

-- Does a <delay/> claim to come from our server (or our account)?
local function claims_us(c, d)
  local from = d.attr.from and jid.prep(d.attr.from)
  local bare = from and jid.bare(from)
  return bare ~= nil and (jid.equal(bare, c.domain or "") or jid.equal(bare, c.bare_jid or ""))
end

-- The archive's time as the message's first <delay/> (XEP-0203, from our
-- server, as its offline storage stamps one): the one c:delay_of reads.
-- The sender's own <delay/>s stay after it, except those claiming our
-- server or account, which only it may put there (a sender's
-- <delay from='our.domain'/> would otherwise be what the application reads).
local function stamp_archived(c, m, stamp)
  local kept = {}
  for d in m:childtags("delay", NS_DELAY) do
    if not claims_us(c, d) then kept[#kept + 1] = d end
  end
  m:remove_children("delay", NS_DELAY)
  if stamp then require("lxmpp.plugins.delay").add(m, stamp, c.domain) end
  for _, d in ipairs(kept) do m:add_direct_child(d) end
end

-- One fetched archive entry: delivered stamped with the archive's time,
-- the anchor moves on.
local function fetched(c, run, item, fire)
  local m = item.message
  if for_us(c, m) and not seen(c, item.id) then
    stamp_archived(c, m, item.stamp)
    fire(c, "stanza", m)
    fire(c, "message", m)
  end
  run.last = { id = item.id, stamp = item.stamp }
  run.fetched[item.id] = true
end

-- Pages of our archive after the anchor, up to the newest id the bind
-- saw, bounded: true when it got there, else nil, why (nil, why, true
-- when the anchor is lost: the archive no longer holds it and its time is
-- unknown).
local function fetch(c, run, fire)
  local mam = c:plugin("mam")
  local anchor = run.anchor
  if not run.newest then
    -- a <bound/> without the archive's metadata: XEP-0313 §"Archive metadata"
    local md, msg, cond = mam:metadata(nil, M.TIMEOUT)
    if not md then
      if cond == "service-unavailable" or cond == "feature-not-implemented" then
        c:log("info", "no archive to catch up from after the Bind2 login (%s)", tostring(cond))
        return true
      end
      return nil, "the archive's metadata: " .. tostring(msg) .. " (" .. tostring(cond) .. ")"
    end
    run.newest = md["end"] and md["end"].id
    if not run.newest or run.newest == anchor.id then return true end
  end
  local q = { after = anchor.id, max = M.PAGE, timeout = M.TIMEOUT }
  local count, ok, why = 0, false, nil
  for pages = 1, M.MAX_PAGES do
    if c.catchup ~= run then why = "a new session began" break end
    local page, msg, cond = mam:query(q)
    if not page and cond == "item-not-found" and pages == 1 then
      if not anchor.stamp then
        return nil, "the archive no longer holds entry " .. anchor.id .. " and its time is unknown", true
      end
      c:log("info", "the archive no longer holds entry %s: catching up from its time", anchor.id)
      q = { start = anchor.stamp, max = M.PAGE, timeout = M.TIMEOUT }
      page, msg, cond = mam:query(q)
    end
    if not page then why = tostring(msg) .. " (" .. tostring(cond) .. ")" break end
    if c.catchup ~= run then why = "a new session began" break end
    local reached, capped = false, false
    for _, item in ipairs(page.messages) do
      if count >= M.MAX_MESSAGES then capped = true break end
      count = count + 1
      fetched(c, run, item, fire)
      if item.id == run.newest then reached = true break end
    end
    -- (a complete page the cap cut short is not the end)
    if reached or (page.complete and not capped) or #page.messages == 0 then ok = true break end
    if count >= M.MAX_MESSAGES then
      why = ("stopped after %d messages"):format(count)
      break
    end
    local last = page.last or (run.last and run.last.id)
    if not last or last == q.after then why = "the archive's paging does not advance" break end
    q = { after = last, start = q.start, max = M.PAGE, timeout = M.TIMEOUT }
    if pages == M.MAX_PAGES then why = ("stopped after %d queries"):format(M.MAX_PAGES) end
  end
  return ok or nil, why
end

--- catchup.run(c, run): the catch-up (a task): fetch, then the live
-- messages held meanwhile, whatever happened (a failing handler of ours
-- included: the hold always ends).
function M.run(c, run)
  local fire = require("lxmpp.session").Session.fire_user
  local pok, ok, why, lost = compat.pcall(fetch, c, run, fire)
  if not pok then ok, why, lost = nil, tostring(ok), nil end
  if why then c:log("warn", "the archive catch-up after the Bind2 login did not finish: %s", why) end
  -- where we are: the last entry fetched; after a complete catch-up, the
  -- newest one that came live meanwhile (a live copy of an entry fetched,
  -- a server's offline message, is no newer)
  if c.catchup == run then
    local last = run.last
    if ok then
      for i = #run.live, 1, -1 do
        if not run.fetched[run.live[i].id] then
          last = run.live[i]
          break
        end
      end
      last = last or run.anchor
      set_anchor(c, last.id, last.stamp)              -- (unpinned)
    elseif lost then
      -- nothing to go on from: pinning it (or keeping it pinned) would
      -- stall every later login
      last = last or run.anchor
      set_anchor(c, last.id, last.stamp)
    else
      -- pinned where the fetch stopped: the rest is only in the archive
      -- now (the bind cleared it from offline storage), and live messages
      -- must not move the anchor past it; what came live meanwhile is
      -- fetched again next time, and not delivered again
      last = last or run.anchor
      local ids = {}
      for _, id in ipairs(run.anchor.seen or {}) do ids[#ids + 1] = id end
      set_anchor(c, last.id, last.stamp, true, ids)
      local anchor = c.login.archive
      for _, l in ipairs(run.live) do
        if not run.fetched[l.id] then pinned_seen(anchor, l.id) end
      end
    end
    save(c)
    run.running = false
    c.catchup = nil
    if not ok then
      -- the application may go on itself (c:mam_catch_up{ after = id })
      fire(c, "catch-up-incomplete", not lost and c.login.archive.id or nil, why)
    end
  end
  for _, m in ipairs(run.held) do deliver(c, m, fire) end
  run.held = {}
end

return M
