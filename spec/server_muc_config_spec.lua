-- Room configuration and the lists it opens (lxmpp.server.muc), regression
-- specs for what a peer server's transcript tests found: who may read the
-- member list (XEP-0045 §9.5) and the status codes that announce a
-- configuration, the first one of a locked room included (§10.2.1).

local mh = require "spec.support.muc_harness"

local ROOM, OWNER, NS_ADMIN = mh.ROOM, mh.OWNER, mh.NS_ADMIN
local harness, configured_room, join, send_iq = mh.harness, mh.configured_room, mh.join, mh.iq
local codes, only, to, error_condition = mh.codes, mh.only, mh.to, mh.error_condition

local function list_query(aff)
  return mh.admin_query .. "<item affiliation='" .. aff .. "'/></query>"
end

-- The bare JIDs of a muc#admin list result, sorted.
local function listed(s)
  assert.equal("result", s.attr.type, tostring(s))
  local jids = {}
  for it in s:get_child("query", NS_ADMIN):childtags("item") do
    assert.equal("member", it.attr.affiliation)
    jids[#jids + 1] = it.attr.jid
  end
  table.sort(jids)
  return jids
end

local function add_members(h, ...)
  local items = {}
  for i, bare in ipairs({ ... }) do items[i] = "<item affiliation='member' jid='" .. bare .. "'/>" end
  local out = h:send(send_iq(OWNER, "set", ROOM, mh.admin_query .. table.concat(items) .. "</query>"))
  assert.equal("result", out[1].attr.type, tostring(out[1]))
end

-- The groupchat status messages among `out` sent to `full`.
local function notices(out, full)
  local found = {}
  for _, s in ipairs(to(out, full)) do
    if s.name == "message" and s.attr.type == "groupchat" and s.attr.from == ROOM then found[#found + 1] = s end
  end
  return found
end

describe("lxmpp.server.muc: the member list (XEP-0045 §9.5)", function ()
  it("is readable by occupants and by members of a non-anonymous members-only room", function ()
    local h = harness()
    configured_room(h, { membersonly = "1", whois = "anyone" })
    add_members(h, "carol@localhost", "dave@localhost")
    join(h, "carol@localhost/c", "carol")
    -- an occupant who is a member
    local out = h:send(send_iq("carol@localhost/c", "get", ROOM, list_query("member")))
    assert.same({ "carol@localhost", "dave@localhost" }, listed(out[1]))
    -- a member who is not in the room (yet)
    out = h:send(send_iq("dave@localhost/d", "get", ROOM, list_query("member")))
    assert.same({ "carol@localhost", "dave@localhost" }, listed(out[1]))
    -- neither a member nor an occupant
    out = h:send(send_iq("eve@localhost/e", "get", ROOM, list_query("member")))
    assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
    -- the other lists stay with admins and owners
    for _, aff in ipairs({ "owner", "admin", "outcast" }) do
      out = h:send(send_iq("carol@localhost/c", "get", ROOM, list_query(aff)))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) }, aff)
    end
    -- an outcast is no member
    h:send(send_iq(OWNER, "set", ROOM, mh.admin_query .. "<item affiliation='outcast' jid='dave@localhost'/></query>"))
    out = h:send(send_iq("dave@localhost/d", "get", ROOM, list_query("member")))
    assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
  end)

  it("stays with admins and owners in semi-anonymous or open rooms", function ()
    for _, fields in ipairs({ { membersonly = "1", whois = "moderators" }, { membersonly = "0", whois = "anyone" } }) do
      local h = harness()
      configured_room(h, fields)
      add_members(h, "carol@localhost")
      join(h, "carol@localhost/c", "carol")
      local out = h:send(send_iq("carol@localhost/c", "get", ROOM, list_query("member")))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) }, fields.whois)
      out = h:send(send_iq(OWNER, "get", ROOM, list_query("member")))
      assert.same({ "carol@localhost" }, listed(out[1]))
    end
  end)
end)

describe("lxmpp.server.muc: configuration notices (XEP-0045 §10.2.1)", function ()
  it("announces the first configuration of a locked room: 172 when it becomes non-anonymous, and 104", function ()
    local h = harness()
    h:send(mh.presence(OWNER, ROOM .. "/boss"))
    local out = h:send(send_iq(OWNER, "set", ROOM, mh.submit({ whois = "anyone", roomname = "Open" })))
    assert.equal("result", out[1].attr.type)
    local notice = only(notices(out, OWNER), function () return true end, "configuration notice")
    assert.same({ ["172"] = true, ["104"] = true }, codes(notice))
    assert.is_nil(notice:get_child("body"))
  end)

  it("announces a first configuration that changes only other settings with 104 alone", function ()
    local h = harness()
    h:send(mh.presence(OWNER, ROOM .. "/boss"))
    local out = h:send(send_iq(OWNER, "set", ROOM, mh.submit({ roomname = "Lobby" })))
    assert.same({ ["104"] = true }, codes(only(notices(out, OWNER), function () return true end)))
  end)

  it("says nothing when a configuration changes nothing (an instant room, a resubmission)", function ()
    local h = harness()
    local out = configured_room(h)
    assert.same({}, notices(out, OWNER))
    out = h:send(send_iq(OWNER, "set", ROOM, mh.submit({ whois = "moderators" })))
    assert.equal("result", out[1].attr.type)
    assert.same({}, notices(out, OWNER))
  end)

  it("tells every occupant when the room turns semi-anonymous again (173 and 104)", function ()
    local h = harness()
    configured_room(h, { whois = "anyone" })
    join(h, "bob@localhost/a", "bob")
    local out = h:send(send_iq(OWNER, "set", ROOM, mh.submit({ whois = "moderators" })))
    for _, full in ipairs({ OWNER, "bob@localhost/a" }) do
      assert.same({ ["173"] = true, ["104"] = true }, codes(only(notices(out, full), function () return true end)))
    end
  end)
end)
