-- The cost of one account is bounded for the others (docs/server.md,
-- "Rosters"): a user with a large roster (at limits.max_roster, or a
-- larger one stored before the limit) sets roster items and sends presence
-- broadcasts while a second account of its own lists a pubsub service on
-- which it owns many nodes with the "presence" access model; all the while
-- another user's XEP-0199 pings to the server keep coming back quickly: of
-- SAMPLES pings at least, the median within 100 ms and nine in ten within
-- 200 ms (room for a loaded machine's hiccups). Each of these operations
-- once decoded the whole roster per stanza, or per node: a 1,000-contact
-- roster and 300 nodes made one disco#items cost more than a second of the
-- server's one loop (and the clients here, in the same loop, waited too:
-- so pings are counted, not only timed).
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"

local D = serve.DOMAIN
local SERVICE = "pubsub." .. D
local USERS = { big = "big-pw", helper = "helper-pw", other = "other-pw" }
-- Under Valgrind everything is slower, the limits on time scale with it,
-- and fewer nodes keep the run short (only the fixed code runs there)
local NODES = slow.valgrind and 100 or 300
local OWN_NODES = { max_pubsub_user_nodes = NODES }   -- big creates them all (100 by default)
local RTT = 0.1 * slow.factor           -- the largest median round trip
local LOAD = 2                          -- seconds of load, at least
local SAMPLES = 30                      -- pings, at least
local GIVE_UP = LOAD + 8 * slow.factor  -- seconds: fewer pings by then fail

local function contact(i) return ("c%05d@%s"):format(i, i % 2 == 0 and D or "elsewhere.test") end

-- n contacts with a mutual subscription: helper, then contacts that are
-- half accounts here (none of which exists), half elsewhere.
local function seed(srv, n)
  srv.store:set_roster_item("big", "helper@" .. D, { subscription = "both" })
  for i = 1, n - 1 do
    srv.store:set_roster_item("big", contact(i), { subscription = "both", name = "contact " .. i, groups = { "g" } })
  end
end

-- The p-quantile of a list of numbers (0.5: the median).
local function quantile(list, p)
  local s = { compat.unpack(list) }
  table.sort(s)
  return s[math.max(1, math.ceil(#s * p))]
end

-- Loads the server from big's accounts (big: roster sets of existing
-- contacts and presence broadcasts; helper: disco#items of the service
-- where big owns NODES presence-model nodes) while other pings the server
-- (LOAD seconds and SAMPLES pings, or GIVE_UP seconds). Returns the round
-- trips, how many operations ran and how long it all took.
local function measure(port, n)
  local big = assert(serve.login(port, "big", "big-pw"))
  local helper = assert(serve.login(port, "helper", "helper-pw"))
  local other = assert(serve.login(port, "other", "other-pw"))
  for i = 1, NODES do
    assert(big:pubsub_create(SERVICE, "n" .. i, { ["pubsub#access_model"] = "presence" }))
  end
  local listed = assert(helper:disco_items(SERVICE, nil, 60 * slow.factor))
  assert.equal(NODES, #listed)                 -- helper sees big's presence
  local ops, finished, stop = { set = 0, presence = 0, disco = 0 }, 0, false
  local t0 = core.now()
  lxmpp.spawn(function()
    local i = 0
    while not stop do
      i = i + 1
      assert(big:roster_set(contact(i % (n - 1) + 1), "renamed " .. i, { "g" }, 60 * slow.factor))
      ops.set = ops.set + 1
      big:send(st.presence():text_tag("status", "busy " .. i))
      assert(big:ping(nil, 60 * slow.factor))   -- the broadcast before it is done
      ops.presence = ops.presence + 1
    end
    finished = finished + 1
  end)
  lxmpp.spawn(function()
    while not stop do
      assert(helper:disco_items(SERVICE, nil, 60 * slow.factor))
      ops.disco = ops.disco + 1
    end
    finished = finished + 1
  end)
  local rtts = {}
  while (core.now() < t0 + LOAD or #rtts < SAMPLES) and core.now() < t0 + GIVE_UP do
    lxmpp.sleep(0.02)
    rtts[#rtts + 1] = assert(other:ping(nil, 60 * slow.factor))
  end
  local took = core.now() - t0
  stop = true
  assert.truthy(serve.until_true(function() return finished == 2 end, 60 * slow.factor))
  big:close(); helper:close(); other:close()
  return rtts, ops, took
end

local function check(what, n, rtts, ops, took)
  local med, p90 = quantile(rtts, 0.5), quantile(rtts, 0.9)
  local report = ("%s (%d contacts): %d pings in %.1f s, median %.1f ms, 90%% within %.1f ms, largest %.1f ms;"
    .. " %d roster sets, %d broadcasts, %d disco#items"):format(what, n, #rtts, took, med * 1000, p90 * 1000,
    quantile(rtts, 1) * 1000, ops.set, ops.presence, ops.disco)
  assert.truthy(#rtts >= SAMPLES, report)
  assert.truthy(med < RTT and p90 < 2 * RTT, report)
  -- the load ran (a stalled load would make quick pings meaningless)
  assert.truthy(ops.set >= 3 and ops.disco >= 3, report)
end

describe("embedded server: one user's large roster does not slow the others", function()
  it("at limits.max_roster", function()
    serve.run({ users = USERS, pubsub = SERVICE, limits = OWN_NODES }, function(srv, port)
      local n = srv.limits.max_roster
      seed(srv, n)
      local rtts, ops, took = measure(port, n)
      check("at the limit", n, rtts, ops, took)
    end)
  end)

  it("at limits.max_roster, stored in SQLite", function()
    local path = os.tmpname()
    os.remove(path)
    serve.run({ users = USERS, pubsub = SERVICE, storage = path, limits = OWN_NODES }, function(srv, port)
      local n = srv.limits.max_roster
      seed(srv, n)
      local rtts, ops, took = measure(port, n)
      check("in SQLite", n, rtts, ops, took)
    end)
    for _, f in ipairs({ path, path .. "-wal", path .. "-shm" }) do os.remove(f) end
  end)

  it("with a larger roster stored before the limit", function()
    local limits = { max_roster = 1000, max_pubsub_user_nodes = NODES }
    serve.run({ users = USERS, pubsub = SERVICE, limits = limits }, function(srv, port)
      seed(srv, 3000)
      local rtts, ops, took = measure(port, 3000)
      check("stored larger", 3000, rtts, ops, took)
    end)
  end)
end)
