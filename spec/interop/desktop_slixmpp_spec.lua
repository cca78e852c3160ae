-- What desktop clients look for on the embedded server, done by a client
-- nobody here wrote: slixmpp (Debian's python3-slixmpp, /usr/bin/python3)
-- through spec/interop/desktop_slixmpp.py. Covered: MAM and private
-- storage on the server's disco#info (profanity), XEP-0048 bookmarks in
-- XEP-0049 private storage (poezio, mcabber) seen as XEP-0402 items and
-- back, XEP-0048 over PEP (XEP-0223), and a room's archive read with
-- xep_0313 at the room's JID (Gajim). A missing slixmpp fails, never skips.
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local server = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/interop"
local SCRIPT = HERE .. "/desktop_slixmpp.py"
local PYTHON = "/usr/bin/python3"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local MUC = "conference.example.test"

local function run(port, ...)
  local r = proc.start({ PYTHON, SCRIPT, "--port", tostring(port), "--ca", pki.get().ca, ... }):wait(60)
  local recs = {}
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    recs[#recs + 1] = f
  end
  r.recs = recs
  r.text = ("exit %s\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.out, r.err)
  return r
end

-- The records of one kind, without the kind.
local function records(r, kind)
  local out = {}
  for _, f in ipairs(r.recs) do
    if f[1] == kind then out[#out + 1] = table.concat(f, " ", 2) end
  end
  table.sort(out)
  return out
end

describe("embedded server with slixmpp doing what desktop clients do", function()
  setup(function()
    local ok = os.execute(pki.NO_PRELOAD .. PYTHON .. " -c 'import slixmpp' 2>/dev/null")
    if not ok then
      error("slixmpp is not installed for " .. PYTHON .. ": run `make deps` (Debian package python3-slixmpp)")
    end
  end)
  after_each(assert_clean)

  it("stores and reads bookmarks through private storage, XEP-0402 and PEP alike", function()
    server.run_logged({ users = USERS, muc = MUC }, function(_, port)
      local r = run(port, "bookmarks", "alice@example.test", USERS.alice, "tea@" .. MUC)
      assert.equal(0, r.code, r.text)
      assert.same({ "jabber:iq:private", "urn:xmpp:mam:2" }, records(r, "server_feature"), r.text)
      assert.same({ "urn:xmpp:bookmarks:1#compat", "urn:xmpp:bookmarks:1#compat-pep" },
        records(r, "account_feature"), r.text)
      assert.same({
        "other@conference.example.test Other False n2 ",
        "tea@conference.example.test Poezio room True poezio-nick room-pw",
      }, records(r, "private"), r.text)
      assert.same({ "https://example.test/" }, records(r, "url"), r.text)
      assert.same({
        "other@conference.example.test Other None n2",   -- no autojoin attribute: false
        "tea@conference.example.test Poezio room true poezio-nick",
      }, records(r, "native"), r.text)
      assert.same({
        "native@conference.example.test Native True",
        "other@conference.example.test Other False",
        "tea@conference.example.test Poezio room True",
      }, records(r, "after"), r.text)
      assert.same({ "tea@conference.example.test PEP room" }, records(r, "pep"), r.text)
      -- one set: what went over PEP is what private storage shows
      assert.same({ "tea@conference.example.test PEP room pep-nick" }, records(r, "after_pep"), r.text)
    end)
  end)

  it("reads a room's archive at the room's JID, with the room's stanza ids", function()
    server.run_logged({ users = USERS, muc = MUC }, function(_, port)
      local room = "tea@" .. MUC
      local r = run(port, "archive", "alice@example.test", USERS.alice, "bob@example.test", USERS.bob, room)
      assert.equal(0, r.code, r.text)
      assert.same({ room, room, room }, records(r, "stanza_id"), r.text)
      assert.same({ "urn:xmpp:mam:2", "urn:xmpp:sid:0" }, records(r, "room_feature"), r.text)
      assert.same({
        room .. "/alice first True", room .. "/alice second True", room .. "/alice third True",
      }, records(r, "archived"), r.text)
      assert.same({ "true" }, records(r, "fin"), r.text)
    end)
  end)
end)
