-- The cost of one account is bounded for the others (docs/server.md,
-- "Protection"): a user with a large roster (at limits.max_roster, or a
-- larger one stored before the limit existed) sets roster items, sends
-- presence broadcasts, and has a second account of its own list a pubsub
-- service where it owns many nodes with the "presence" access model; all
-- the while another user's XEP-0199 ping to the server keeps coming back
-- quickly. Each of these once decoded the whole roster per stanza, or per
-- node (a 3,000-item roster and 300 nodes made one disco#items cost 3.6 s).
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"

local D = serve.DOMAIN
local SERVICE = "pubsub." .. D
local USERS = { big = "big-pw", helper = "helper-pw", other = "other-pw" }
local NODES = 300
local RTT = 0.1 * slow.factor           -- what a ping may take, at the median
local LOAD = 2 * slow.factor            -- seconds of load

-- n contacts with a mutual subscription, half of them local accounts
-- (none of which exists), half elsewhere.
local function seed(srv, n)
  for i = 1, n do
    srv.store:set_roster_item("big", ("c%05d@%s"):format(i, i % 2 == 0 and D or "elsewhere.test"),
      { subscription = "both", name = "contact " .. i, groups = { "g" } })
  end
end

local function median(list)
  table.sort(list)
  return list[(#list + 1) // 2]
end

-- Loads the server from big's account for LOAD seconds (roster sets,
-- presence broadcasts, disco#items by helper on big's nodes) while other
-- pings; returns the median and the largest round trip, and how many of
-- each operation ran.
local function measure(port, n)
  local big = assert(serve.login(port, "big", "big-pw"))
  local helper = assert(serve.login(port, "helper", "helper-pw"))
  local other = assert(serve.login(port, "other", "other-pw"))
  for i = 1, NODES do
    assert(big:pubsub_create(SERVICE, "n" .. i, { ["pubsub#access_model"] = "presence" }))
  end
  local ops = { set = 0, presence = 0, disco = 0 }
  local t_end = core.now() + LOAD
  local finished = 0
  lxmpp.spawn(function()
    local i = 0
    while core.now() < t_end do
      i = i + 1
      assert(big:roster_set(("c%05d@%s"):format(i % n + 1, (i % n + 1) % 2 == 0 and D or "elsewhere.test"),
        "renamed " .. i, { "g" }))
      ops.set = ops.set + 1
      big:send(st.presence():text_tag("status", "busy " .. i))
      big:ping()                                   -- the broadcast has been handled
      ops.presence = ops.presence + 1
    end
    finished = finished + 1
  end)
  lxmpp.spawn(function()
    while core.now() < t_end do
      assert(helper:disco_items(SERVICE, nil, 30 * slow.factor))
      ops.disco = ops.disco + 1
    end
    finished = finished + 1
  end)
  local rtts = {}
  lxmpp.sleep(0.05)
  while core.now() < t_end do
    rtts[#rtts + 1] = assert(other:ping(nil, 60 * slow.factor))
    lxmpp.sleep(0.02)
  end
  assert(serve.until_true(function() return finished == 2 end, 60 * slow.factor))
  local worst = 0
  for _, r in ipairs(rtts) do worst = math.max(worst, r) end
  big:close(); helper:close(); other:close()
  return median(rtts), worst, ops, #rtts
end

describe("embedded server: one user's roster does not slow the others", function()
  it("at limits.max_roster", function()
    serve.run({ users = USERS, pubsub = SERVICE }, function(srv, port)
      local n = srv.limits.max_roster or 1000
      seed(srv, n)
      local med, worst, ops, count = measure(port, n)
      print(("\nat the cap (%d): median %.1f ms, max %.1f ms over %d pings; %d sets, %d broadcasts, %d disco#items")
        :format(n, med * 1000, worst * 1000, count, ops.set, ops.presence, ops.disco))
      assert.truthy(med < RTT, ("median ping %.0f ms"):format(med * 1000))
    end)
  end)

  it("with a larger roster stored before the limit", function()
    serve.run({ users = USERS, pubsub = SERVICE }, function(srv, port)
      local n = 3000
      seed(srv, n)
      local med, worst, ops, count = measure(port, n)
      print(("\noversized (%d): median %.1f ms, max %.1f ms over %d pings; %d sets, %d broadcasts, %d disco#items")
        :format(n, med * 1000, worst * 1000, count, ops.set, ops.presence, ops.disco))
      assert.truthy(med < RTT, ("median ping %.0f ms"):format(med * 1000))
    end)
  end)
end)
