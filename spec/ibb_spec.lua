-- In-band bytestreams (lua/lxmpp/plugins/ibb.lua) between clients of the
-- embedded server: a file goes across chunk by chunk, each chunk waiting
-- for the previous one's ack, and arrives checked; hostile streams (out of
-- sequence, another sender's sid, bad base64, oversized chunks, more than
-- announced, a wrong hash) are refused.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local ibb = require "lxmpp.plugins.ibb"
local serve = require "spec.support.serve"
local ev = require "spec.support.events"

local NS = "http://jabber.org/protocol/ibb"
local USERS = { alice = "pw", bob = "pw", carol = "pw" }

local function with_clients(fn)
  serve.run({ users = USERS }, function(_, port)
    local a = assert(serve.login(port, "alice", "pw"))
    local b = assert(serve.login(port, "bob", "pw"))
    local c = assert(serve.login(port, "carol", "pw"))
    fn(a, b, c)
    a:close(); b:close(); c:close()
  end)
end

-- carol talks IBB by hand
local function raw(c, to, xml)
  return c:request(st.iq({ type = "set", to = to }):add_child(assert(st.parse(xml))), 5)
end

-- a request that must fail: its condition
local function refused(c, to, xml)
  local r, msg, cond = raw(c, to, xml)
  assert(r == nil and type(msg) == "string", "accepted: " .. xml)
  return cond
end

local function open_xml(sid, block, extra, attrs)
  return ("<open xmlns='%s' sid='%s' block-size='%d' %s>%s</open>"):format(NS, sid, block, attrs or "", extra or "")
end

local function data_xml(sid, seq, bytes)
  return ("<data xmlns='%s' sid='%s' seq='%s'>%s</data>"):format(NS, sid, seq, core.base64_encode(bytes))
end

describe("in-band bytestreams", function()
  it("sends a file chunk by chunk, each after the last one's ack, and checks it on arrival", function()
    with_clients(function(a, b)
      local parts = {}
      for i = 1, 400 do parts[i] = core.random(256) end
      local file = table.concat(parts) .. "tail of 17 bytes!"
      local offers = {}
      b:ibb_receive(function(offer)
        offers[#offers + 1] = offer
        return offer.from == a.jid
      end)
      -- bob holds the first chunk back for a while: nothing else may come meanwhile
      local held, during = nil, 0
      b.bus:add("stanza-in", function(s)
        local d = s.name == "iq" and s:get_child("data", NS)
        if not d then return end
        if d.attr.seq == "0" and not held then
          held = s
          lxmpp.spawn(function() lxmpp.sleep(0.4); held.released = true; require("lxmpp.session").internal.route(b, s) end)
          return true
        elseif held and not held.released then
          during = during + 1
        end
      end, 10)
      local progress = {}
      local got = lxmpp.task.waiter()
      b:on("ibb-received", function(t) got:wake(t) end)
      local t0 = core.now()
      local ok, sha = a:ibb_send(b.jid, file, { name = "blob.bin", block_size = 4096,
        progress = function(done, total) progress[#progress + 1] = { done, total } end })
      assert.is_true(ok, sha)
      assert.is_true(core.now() - t0 >= 0.4)
      assert.equal(0, during)
      local t = got:wait()
      assert.equal(#file, #t.data)
      assert.is_true(t.data == file)
      assert.equal(ibb.sha256(file), t.sha256)
      assert.equal(sha, t.sha256)
      assert.equal("blob.bin", t.file.name)
      assert.equal(#file, t.file.size)
      assert.equal(sha, t.file.sha256)
      assert.equal(a.jid, t.from)
      assert.equal(1, #offers)
      assert.equal(4096, offers[1].block_size)
      assert.equal(26, #progress)                       -- 102417 bytes in 4096-byte chunks
      assert.same({ #file, #file }, progress[#progress])
      -- an empty file too
      got = lxmpp.task.waiter()
      assert.is_true((a:ibb_send(b.jid, "")))
      t = got:wait()
      assert.equal("", t.data)
      assert.equal(0, t.file.size)
    end)
  end)

  it("refuses streams nobody accepts", function()
    with_clients(function(a, b, c)
      local ok, msg, cond = a:ibb_send(b.jid, "hello")
      assert.is_nil(ok)
      assert.is_string(msg)
      assert.equal("not-acceptable", cond)
      b:ibb_receive(function(offer) return offer.from == a.jid end, { max_size = 1000, max_block_size = 512 })
      ok, msg, cond = c:ibb_send(b.jid, "hello", { block_size = 512 })
      assert.is_nil(ok)
      assert.is_string(msg)
      assert.equal("not-acceptable", cond)
      cond = select(3, a:ibb_send(b.jid, ("x"):rep(2000)))
      assert.equal("resource-constraint", cond)                       -- larger than max_size
      cond = select(3, a:ibb_send(b.jid, "x", { block_size = 4096 }))
      assert.equal("resource-constraint", cond)                       -- block larger than allowed
      assert.is_true(a:ibb_send(b.jid, "x", { block_size = 512 }))
      b:ibb_receive(nil)
      cond = select(3, a:ibb_send(b.jid, "x"))
      assert.equal("not-acceptable", cond)
      assert.has_error(function() a:ibb_send(b.jid, 5) end)
      assert.has_error(function() a:ibb_send(b.jid, "x", { block_size = 70000 }) end)
      assert.has_error(function() b:ibb_receive("yes") end)
    end)
  end)

  it("refuses chunks out of sequence, from another sender, malformed or too large", function()
    with_clients(function(a, b, c)
      b:ibb_receive(function() return true end, { max_block_size = 1024 })
      local failed = ev.collect(b, "ibb-failed")
      local received = ev.collect(b, "ibb-received")
      -- out of sequence: refused, and the stream is over
      assert(raw(c, b.jid, open_xml("s1", 16)))
      assert(raw(c, b.jid, data_xml("s1", 0, "first")))
      local cond = refused(c, b.jid, data_xml("s1", 2, "third"))
      assert.equal("unexpected-request", cond)
      cond = refused(c, b.jid, data_xml("s1", 1, "second"))
      assert.equal("item-not-found", cond)
      assert.is_true(serve.until_true(function() return #failed == 1 end))
      assert.equal("unexpected-request", failed[1][3])
      -- another sender cannot write into (or close) alice's stream
      assert(raw(a, b.jid, open_xml("s2", 16)))
      cond = refused(c, b.jid, data_xml("s2", 0, "intruder"))
      assert.equal("item-not-found", cond)
      cond = refused(c, b.jid, ("<close xmlns='%s' sid='s2'/>"):format(NS))
      assert.equal("item-not-found", cond)
      assert(raw(a, b.jid, data_xml("s2", 0, "mine")))
      assert(raw(a, b.jid, ("<close xmlns='%s' sid='s2'/>"):format(NS)))
      assert.is_true(serve.until_true(function() return #received == 1 end))
      assert.equal("mine", received[1][1].data)
      -- bad base64, a chunk larger than the block size, a bad seq
      assert(raw(c, b.jid, open_xml("s3", 4)))
      cond = refused(c, b.jid, ("<data xmlns='%s' sid='s3' seq='0'>!!notbase64</data>"):format(NS))
      assert.equal("bad-request", cond)
      assert(raw(c, b.jid, open_xml("s4", 4)))
      cond = refused(c, b.jid, data_xml("s4", 0, "too long"))
      assert.equal("policy-violation", cond)
      assert(raw(c, b.jid, open_xml("s5", 4)))
      cond = refused(c, b.jid, data_xml("s5", "-1", "x"))
      assert.equal("unexpected-request", cond)
      -- bad opens
      cond = refused(c, b.jid, open_xml("s6", 4096))
      assert.equal("resource-constraint", cond)
      cond = refused(c, b.jid, open_xml("s7", 16, nil, "stanza='message'"))
      assert.equal("feature-not-implemented", cond)
      cond = refused(c, b.jid, ("<open xmlns='%s' sid='s8' block-size='many'/>"):format(NS))
      assert.equal("bad-request", cond)
      assert(raw(c, b.jid, open_xml("s9", 16)))
      cond = refused(c, b.jid, open_xml("s9", 16))
      assert.equal("conflict", cond)
      assert.equal(1, #received)
    end)
  end)

  it("checks the announced size and hash, and wraps the sequence number", function()
    with_clients(function(_, b, c)
      b:ibb_receive(function() return true end)
      local failed = ev.collect(b, "ibb-failed")
      local received = ev.collect(b, "ibb-received")
      local function file_xml(size, data)
        return ("<file xmlns='urn:xmpp:jingle:apps:file-transfer:5'><size>%d</size>"
          .. "<hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>%s</hash></file>"):format(size,
          core.base64_encode(core.hash("sha256", data)))
      end
      -- the hash of other data
      assert(raw(c, b.jid, open_xml("h1", 16, file_xml(5, "other"))))
      assert(raw(c, b.jid, data_xml("h1", 0, "hello")))
      assert(raw(c, b.jid, ("<close xmlns='%s' sid='h1'/>"):format(NS)))
      assert.is_true(serve.until_true(function() return #failed == 1 end))
      assert.matches("sha%-256", failed[1][2])
      assert.equal("not-acceptable", failed[1][3])
      -- fewer bytes than announced
      assert(raw(c, b.jid, open_xml("h2", 16, file_xml(10, "hello"))))
      assert(raw(c, b.jid, data_xml("h2", 0, "hello")))
      assert(raw(c, b.jid, ("<close xmlns='%s' sid='h2'/>"):format(NS)))
      assert.is_true(serve.until_true(function() return #failed == 2 end))
      assert.matches("announced", failed[2][2])
      -- more bytes than announced: refused at once
      assert(raw(c, b.jid, open_xml("h3", 16, file_xml(3, "hey"))))
      local cond = refused(c, b.jid, data_xml("h3", 0, "hello"))
      assert.equal("resource-constraint", cond)
      -- a malformed hash refuses the open
      cond = refused(c, b.jid, open_xml("h4", 16,
        "<file xmlns='urn:xmpp:jingle:apps:file-transfer:5'><hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>abc</hash></file>"))
      assert.equal("bad-request", cond)
      -- seq 65535 is followed by 0
      assert(raw(c, b.jid, open_xml("w", 16, file_xml(4, "abcd"))))
      for _, s in pairs(b.ibb.sessions) do s.seq = 65534 end
      assert(raw(c, b.jid, data_xml("w", 65534, "a")))
      assert(raw(c, b.jid, data_xml("w", 65535, "b")))
      assert(raw(c, b.jid, data_xml("w", 0, "cd")))
      assert(raw(c, b.jid, ("<close xmlns='%s' sid='w'/>"):format(NS)))
      assert.is_true(serve.until_true(function() return #received == 1 end))
      assert.equal("abcd", received[1][1].data)
    end)
  end)
end)

describe("in-band bytestreams from a hostile server", function()
  -- a scripted server (spec/support/smserver.lua) sends what no real server
  -- routes: requests whose from is no JID
  it("drops requests whose from is not a JID (no reply, no policy call, not our server's); "
    .. "a request without a from is our server's", function()
    local smserver = require "spec.support.smserver"
    smserver.run(function()
      local got = {}
      local srv = smserver.start({ stanza = function(_, s) got[#got + 1] = s end })
      local logged = {}
      local c = assert(lxmpp.connect(srv:client_opts({ jid = "anon@example.test/r", reconnect = false,
        logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end })))
      local offers = {}
      c:ibb_receive(function(offer)
        offers[#offers + 1] = offer.from
        return offer.from == "example.test"      -- a policy that trusts our server
      end)
      local received = ev.collect(c, "ibb-received")
      local n0 = #got
      local function iq(id, from, payload)
        return ("<iq type='set' id='%s'%s>%s</iq>"):format(id, from and (" from='" .. from .. "'") or "", payload)
      end
      local conn = srv:session().conn
      for i, bad in ipairs({ "mallory@@evil.example", "bad@exa mple.test", "example.test/" }) do
        conn:write(iq("o" .. i, bad, open_xml("s" .. i, 16)) .. iq("d" .. i, bad, data_xml("s" .. i, 0, "hello")) ..
          iq("c" .. i, bad, ("<close xmlns='%s' sid='s%d'/>"):format(NS, i)))
      end
      -- a request without a from: the server's own
      conn:write(iq("o9", nil, open_xml("s9", 16)) .. iq("d9", nil, data_xml("s9", 0, "hi")) ..
        iq("c9", nil, ("<close xmlns='%s' sid='s9'/>"):format(NS)))
      assert.is_true(smserver.wait_for(function() return #received == 1 end, 5))
      ev.settle(0.2)
      assert.same({ "example.test" }, offers)
      assert.equal("example.test", received[1][1].from)
      assert.equal("hi", received[1][1].data)
      local replies = {}
      for i = n0 + 1, #got do replies[#replies + 1] = got[i].attr.id .. " " .. tostring(got[i].attr.type) end
      assert.same({ "o9 result", "d9 result", "c9 result" }, replies)   -- none to the invalid JIDs
      local dropped = 0
      for _, l in ipairs(logged) do
        if l:find("^warn dropped an in%-band bytestream request from an invalid JID") then dropped = dropped + 1 end
      end
      assert.equal(9, dropped)
      c:close()
      srv:close()
    end)
  end)
end)
