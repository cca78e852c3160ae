-- The embedded server's HTTP file upload service (lxmpp.server.upload and
-- lxmpp.server.http_files, option `upload`), driven by real lxmpp clients
-- through the upload plugin over verified HTTPS (the suite's CA), and by
-- raw bytes over TLS for the hostile HTTP cases: discovery, slots, upload
-- and fetch byte-exact, the slot rules (size, name, requester, one use,
-- expiry, length, type), quotas, strict HTTP parsing, deadlines,
-- connection limits, files on disk across a restart.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local http = require "lxmpp.http"
local serve = require "spec.support.serve"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local SERVICE = "upload.example.test"
local NS = "urn:xmpp:http:upload:0"

-- Runs fn(srv, port, ports, http_port) on a server with the upload service.
local function run(fn, opts, upload)
  opts = opts or {}
  opts.users = opts.users or USERS
  upload = upload or {}
  upload.domain, upload.listen = SERVICE, "127.0.0.1:0"
  opts.upload = upload
  serve.run(opts, function(srv, port, ports)
    local hp
    for _, a in ipairs(srv:addresses()) do if a.kind == "upload" then hp = a.port end end
    return fn(srv, port, ports, assert(hp, "no upload listener"))
  end)
end

local function login(port, user) return assert(serve.login(port, user, USERS[user])) end

-- The slot request IQ, answered: result or error stanza.
local function ask(c, filename, size, ct)
  return c:request(st.iq({ type = "get", to = SERVICE }):tag("request",
    { xmlns = NS, filename = filename, size = size, ["content-type"] = ct }))
end

local function put(url, body, headers)
  return http.request({ method = "PUT", url = url, body = body, headers = headers,
    cafile = serve.pki().ca, address = "127.0.0.1" })
end

local function get(url)
  return http.request({ url = url, cafile = serve.pki().ca, address = "127.0.0.1", max_response = 4 * 1048576 })
end

-- Raw bytes over verified TLS to the HTTP port: the whole answer, read
-- until the server closes (or `wait` seconds), and the seconds it took.
local function raw(hp, chunks, wait)
  local conn = assert(net.connect("127.0.0.1", hp))
  local w = lxmpp.task.waiter("raw https", 1)
  local got, closed = {}, false
  conn:on("tls-done", function() w:wake(true) end)
  conn:on("tls-failed", function(m) w:wake(nil, m) end)
  conn:on("data", function(b) got[#got + 1] = b end)
  conn:on("closed", function() closed = true; w:wake("closed") end)
  conn:on("eof", function() closed = true; w:wake("closed") end)
  local ctx = assert(core.tls_context({ mode = "client", cafile = serve.pki().ca }))
  assert(conn:starttls(ctx, serve.DOMAIN))
  local t = core.timer(5, w)
  assert(w:wait(), "TLS handshake")
  t:stop()
  conn:raw()
  local start = core.now()
  if type(chunks) == "string" then chunks = { chunks } end
  for _, c in ipairs(chunks) do   -- a number: a pause of that many seconds
    if type(c) == "number" then lxmpp.sleep(c) elseif not conn:write(c) then break end
  end
  serve.until_true(function() return closed end, wait or 5)
  conn:abort()
  ctx:close()
  return table.concat(got), core.now() - start, closed
end

local function status_of(answer) return tonumber(answer:match("^HTTP/1%.1 (%d%d%d) ")) end

describe("embedded server: HTTP upload", function()
  it("is listed by the server and shows its identity, feature and maximum size", function()
    run(function(_, port)
      local a = login(port, "alice")
      local listed = false
      for _, item in ipairs(assert(a:disco_items())) do listed = listed or item.jid == SERVICE end
      assert.is_true(listed)
      local info = assert(a:disco_info(SERVICE))
      assert.same({ "store", "file" }, { info.identities[1].category, info.identities[1].type })
      assert.is_true(info.features[NS])
      assert.same({ SERVICE, 5000 }, { a:upload_service() })
    end, nil, { max_size = 5000 })
  end)

  it("takes files byte-exact, text and binary across read buffers, and serves them with their type", function()
    run(function(_, port)
      local a = login(port, "alice")
      local text = "hello, world\n"
      local url = assert(a:upload(text, { name = "hello world.txt", content_type = "text/plain",
        address = "127.0.0.1" }))
      assert.matches("^https://example%.test:%d+/upload/%x+/hello%%20world%.txt$", url)
      local status, headers, body = get(url)
      assert.same({ 200, "text/plain", text, "nosniff", "default-src 'none'; sandbox; frame-ancestors 'none'" },
        { status, headers["content-type"], body, headers["x-content-type-options"],
          headers["content-security-policy"] })
      local bytes = {}
      for i = 1, 200 * 1024 do bytes[i] = string.char((i * 7919 + compat.idiv(i, 256)) % 256) end
      local bin = "\0\0" .. table.concat(bytes) .. "\0"
      local burl = assert(a:upload(bin, { name = "blob.bin", address = "127.0.0.1" }))
      status, headers, body = get(burl)
      assert.equal(200, status)
      assert.equal("application/octet-stream", headers["content-type"])
      assert.equal(#bin, #body)
      assert.is_true(bin == body, "the bytes differ")
      -- anyone with the URL reads it; the wrong name or token does not
      assert.equal(404, (get((url:gsub("hello%%20world", "other")))))
      assert.equal(404, (get((url:gsub("/upload/(%x)", "/upload/%1%1", 1)))))
    end)
  end)

  it("refuses files over max_size with file-too-large, bad names and sizes with bad-request", function()
    run(function(_, port)
      local a = login(port, "alice")
      local _, _, cond, e = ask(a, "big.bin", "1001")
      assert.equal("not-acceptable", cond)
      local ftl = e:get_child("error"):get_child("file-too-large", NS)
      assert.equal("1000", ftl:get_child_text("max-file-size"))
      assert.truthy(ask(a, "ok.bin", "1000"))
      for _, name in ipairs({ "a/b", "..", ".", "", "x\\y", "tab\there", ("n"):rep(256), "../etc/passwd" }) do
        local r, _, c = ask(a, name, "10")
        assert.is_nil(r, name)
        assert.equal("bad-request", c, name)
      end
      assert.truthy(ask(a, "snowman-\226\152\131.txt", "10"))    -- UTF-8 names are fine
      assert.truthy(ask(a, ("n"):rep(255), "10"))
      for _, size in ipairs({ "-1", "abc", "1e3", "", "99999999999999999999", " 5" }) do
        local r, _, c = ask(a, "f.txt", size)
        assert.is_nil(r, size)
        assert.equal("bad-request", c, size)
      end
      local r, _, c = ask(a, "f.txt", "5", "text/plain\nX: y")
      assert.same({ nil, "bad-request" }, { r, c })
      -- c:upload knows the maximum from disco and does not ask
      local ok, _, ucond = a:upload(("x"):rep(1001), { name = "big.bin", address = "127.0.0.1" })
      assert.same({ nil, "not-acceptable" }, { ok, ucond })
    end, nil, { max_size = 1000 })
  end)

  it("hands slots to the server's own users only", function()
    run(function(_, port, ports)
      local comp = lxmpp.component({ jid = "gw.example.test", secret = "s3cret", host = "127.0.0.1",
        port = ports.component })
      assert(comp:connect())
      local r, _, cond = comp:request(st.iq({ type = "get", to = SERVICE, from = "gw.example.test" })
        :tag("request", { xmlns = NS, filename = "f.txt", size = "3" }))
      assert.same({ nil, "not-allowed" }, { r, cond })
      r, _, cond = comp:request(st.iq({ type = "get", to = SERVICE, from = "someone@gw.example.test" })
        :tag("request", { xmlns = NS, filename = "f.txt", size = "3" }))
      assert.same({ nil, "not-allowed" }, { r, cond })
      comp:close()
      assert.truthy(ask(login(port, "alice"), "f.txt", "3"))
    end, { components = { ["gw.example.test"] = "s3cret" }, component_listen = "127.0.0.1:0" })
  end)

  it("takes one PUT per slot, with exactly the announced length and type, before it expires", function()
    run(function(srv, port)
      local a = login(port, "alice")
      local slot = assert(a:upload_slot(SERVICE, "a.txt", 10, "text/plain"))
      local ct = { ["Content-Type"] = "text/plain" }
      assert.equal(400, (put(slot.put, "short", ct)))
      assert.equal(413, (put(slot.put, ("x"):rep(20), ct)))
      assert.equal(415, (put(slot.put, "0123456789", { ["Content-Type"] = "text/html" })))
      assert.equal(403, (put(slot.put:gsub("a%.txt$", "b.txt"), "0123456789", ct)))  -- another name
      assert.equal(201, (put(slot.put, "0123456789", ct)))   -- the refusals did not use it up
      assert.equal(403, (put(slot.put, "9876543210", ct)))   -- used
      local _, _, body = get(slot.get)
      assert.equal("0123456789", body)
      -- expiry (slot_timeout = 30 here), on the service's clock
      local t = core.now()
      srv.upload.now = function() return t end
      local old = assert(a:upload_slot(SERVICE, "late.txt", 4))
      t = t + 29
      local fresh = assert(a:upload_slot(SERVICE, "fresh.txt", 5))
      t = t + 2
      assert.equal(403, (put(old.put, "late")))
      assert.equal(404, (get(old.get)))
      assert.equal(201, (put(fresh.put, "fresh")))
    end, nil, { slot_timeout = 30 })
  end)

  it("keeps the quotas in all and per account, counting unused slots until they expire", function()
    run(function(srv, port)
      local t = core.now()
      srv.upload.now = function() return t end
      local a, b = login(port, "alice"), login(port, "bob")
      assert(a:upload(("a"):rep(500), { name = "a.bin", address = "127.0.0.1" }))
      local r, _, cond = ask(a, "b.bin", "200")          -- 500 + 200 > 600 for alice
      assert.same({ nil, "resource-constraint" }, { r, cond })
      assert.truthy(ask(a, "c.bin", "100"))               -- 600: just fits
      assert.truthy(ask(b, "d.bin", "300"))               -- 900 of 1000 kept or promised
      r, _, cond = ask(b, "e.bin", "200")
      assert.same({ nil, "resource-constraint" }, { r, cond })
      t = t + 31                                          -- the unused slots expire
      assert.truthy(ask(b, "e.bin", "400"))
    end, { limits = { upload_quota = 1000, upload_user_quota = 600 } }, { slot_timeout = 30 })
  end)

  it("answers hostile HTTP with the right status and keeps serving", function()
    run(function(_, port, _, hp)
      local a = login(port, "alice")
      local slot = assert(a:upload_slot(SERVICE, "t.txt", 3))
      local path = slot.put:match("^https://[^/]+(/.*)$")
      local cases = {
        { "GET / HTTP/1.1\r\nX: " .. ("a"):rep(9000) .. "\r\n\r\n", 431 },
        { ("GET / HTTP/1.1\r\nHost: x\r\n"):rep(1) .. ("A: b\r\n"):rep(65) .. "\r\n", 431 },
        { "\1\2garbage\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\nHost: x\n\n", 400 },
        { "GET /x HTTP/1.1\r\nBad Header: x\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\r\nX: a\1b\r\n\r\n", 400 },
        { "GET /x HTTP/2.0\r\n\r\n", 505 },
        { "DELETE " .. path .. " HTTP/1.1\r\n\r\n", 405 },
        { "GET /upload/../../../../etc/passwd HTTP/1.1\r\n\r\n", 404 },
        { "GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404 },
        { "GET /upload/" .. ("0"):rep(32) .. "/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\n\r\n", 404 },
        { "GET " .. path:gsub("/t%.txt$", "/%%zz") .. " HTTP/1.1\r\n\r\n", 404 },
        { "PUT /upload/../../tmp/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 403 },
        { "PUT " .. path .. " HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 411 },
        { "PUT " .. path .. " HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400 },
        { "PUT " .. path .. " HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", 400 },
        { "PUT " .. path .. " HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc", 400 },
        { "PUT " .. path .. " HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413 },
      }
      for _, case in ipairs(cases) do
        local answer = raw(hp, case[1])
        assert.equal(case[2], status_of(answer), case[1]:sub(1, 60))
        assert.matches("\r\nConnection: close\r\n", answer)
      end
      -- nothing above used the slot up, and Expect: 100-continue is answered
      local answer = raw(hp, { "PUT " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        .. "Expect: 100-continue\r\n\r\n", "a", "b", "c" })
      assert.matches("^HTTP/1%.1 100 Continue\r\n\r\nHTTP/1%.1 201 ", answer)
      assert.equal("abc", select(3, get(slot.get)))
    end)
  end)

  it("closes slow and idle connections within http_timeout, and bounds how many are open", function()
    run(function(_, port, _, hp)
      local a = login(port, "alice")
      -- a head that never ends, a body that stalls: 408 within the deadline
      local answer, took, closed = raw(hp, "GET / HTTP/1.1\r\nHost: x\r\n", 3)
      assert.is_true(closed)
      assert.equal(408, status_of(answer))
      assert.is_true(took < 1.5, tostring(took))
      local slot = assert(a:upload_slot(SERVICE, "s.txt", 100))
      local path = slot.put:match("^https://[^/]+(/.*)$")
      answer = raw(hp, "PUT " .. path .. " HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly a part", 3)
      assert.equal(408, status_of(answer))
      -- a PUT cut off in the middle gives its slot back too
      local cutoff = assert(net.connect("127.0.0.1", hp))
      local w = lxmpp.task.waiter("tls", 1)
      cutoff:on("tls-done", function() w:wake(true) end)
      local ctx = assert(core.tls_context({ mode = "client", cafile = serve.pki().ca }))
      assert(cutoff:starttls(ctx, serve.DOMAIN))
      assert(w:wait())
      cutoff:raw()
      assert(cutoff:write("PUT " .. path .. " HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"))
      lxmpp.sleep(0.1)
      cutoff:abort()
      ctx:close()
      lxmpp.sleep(0.1)
      -- a body that keeps coming, slower in all than the deadline, is taken
      answer = raw(hp, { "PUT " .. path .. " HTTP/1.1\r\nContent-Length: 100\r\n\r\n", 0.3, ("y"):rep(40), 0.3,
        ("y"):rep(40), 0.3, ("y"):rep(20) }, 3)
      assert.equal(201, status_of(answer))
      -- at most http_connections open: the third is cut before TLS
      local idle = {}
      for i = 1, 2 do idle[i] = assert(net.connect("127.0.0.1", hp)) end
      lxmpp.sleep(0.1)
      local third, cut = assert(net.connect("127.0.0.1", hp)), false
      for _, e in ipairs({ "eof", "closed", "read-error" }) do third:on(e, function() cut = true end) end
      third:raw()
      assert.is_true(serve.until_true(function() return cut end, 0.4))   -- before the idle ones time out
      for i = 1, 2 do idle[i]:abort() end
      third:abort()
      lxmpp.sleep(0.1)
      assert.truthy(a:upload("again", { name = "again.txt", address = "127.0.0.1" }))
    end, { limits = { http_timeout = 0.5, http_connections = 2 } })
  end)

  it("keeps files under storage_dir, named by token, across a restart", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. dir .. " " .. dir .. "/files"))
    local db = dir .. "/server.db"
    local url
    run(function(_, port)
      local a = login(port, "alice")
      url = assert(a:upload("kept\0bytes", { name = "k.bin", address = "127.0.0.1" }))
      local token = url:match("/upload/(%x+)/")
      local f = assert(io.open(dir .. "/files/" .. token, "rb"))
      assert.equal("kept\0bytes", f:read("*a"))
      f:close()
    end, { storage = db }, { storage_dir = dir .. "/files" })
    -- the port differs after a restart: only the path of the old URL is kept
    local path = url:match("^https://[^/]+(/.*)$")
    run(function(_, _, _, hp)
      local status, _, body = get("https://example.test:" .. hp .. path)
      assert.same({ 200, "kept\0bytes" }, { status, body })
    end, { storage = db }, { storage_dir = dir .. "/files" })
    os.execute("rm -rf " .. dir)
  end)

  it("deletes files after expire seconds, and with their account", function()
    run(function(srv, port)
      local a = login(port, "alice")
      local t = os.time()
      srv.upload.clock = function() return t end
      local url = assert(a:upload("short-lived", { name = "s.txt", address = "127.0.0.1" }))
      t = t + 59
      assert.equal(200, (get(url)))
      t = t + 1                               -- expire = 60
      assert.equal(404, (get(url)))
      assert.equal(0, srv.upload.used)
      assert.is_nil(srv.upload.used_by["alice@example.test"])
    end, nil, { expire = 60 })
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. dir))
    run(function(srv, port)
      local a = login(port, "alice")
      local url = assert(a:upload("alice's", { name = "a.txt", address = "127.0.0.1" }))
      local b = login(port, "bob")
      local burl = assert(b:upload("bob's", { name = "b.txt", address = "127.0.0.1" }))
      local token = url:match("/upload/(%x+)/")
      assert(io.open(dir .. "/" .. token, "rb")):close()
      assert(srv:remove_user("alice"))
      assert.equal(404, (get(url)))
      assert.is_nil(io.open(dir .. "/" .. token, "rb"))
      assert.is_nil(srv.store:get("upload_files", token))
      assert.equal(200, (get(burl)))
      assert.equal(#"bob's", srv.upload.used)
    end, nil, { storage_dir = dir })
    os.execute("rm -rf " .. dir)
  end)

  -- rm.py of the audit: a PUT under way when its account goes
  it("stores nothing for a PUT that ends after its account was removed (410), and keeps no quota for the name", function()
    run(function(srv, port, _, hp)
      local a = login(port, "alice")
      local r = ask(a, "f.txt", "10")
      local url = assert(r:find("{urn:xmpp:http:upload:0}slot/put@url"), tostring(r))
      local path = url:match("^https://[^/]+(/.*)$")
      lxmpp.spawn(function()
        lxmpp.sleep(0.3)                    -- the head and half the body are in
        assert(srv:remove_user("alice"))
      end)
      local answer = raw(hp, { "PUT " .. path .. " HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\n01234",
        0.6, "56789" })
      assert.equal(410, status_of(answer), answer)
      assert.matches("account", answer)
      assert.equal(404, status_of(raw(hp, "GET " .. path .. " HTTP/1.1\r\nHost: example.test\r\n\r\n")))
      assert.same({ 0, 0 }, { srv.upload.used, srv.upload:reserved() })
      assert.is_nil(next(srv.upload.files))
      assert.is_nil(srv.upload.used_by["alice@example.test"])
      -- an account of the same name starts with nothing
      assert(srv:add_user("alice", "alice-pw"))
      a = login(port, "alice")
      assert.truthy(a:upload("fresh", { name = "n.txt", address = "127.0.0.1" }))
      assert.equal(#"fresh", srv.upload.used_by["alice@example.test"])
    end)
  end)

  it("validates its options and stops with the server", function()
    local bad = {
      { upload = 5 }, { upload = { domain = "a@b" } }, { upload = { domain = "u.l", url = "http://u.l" } },
      { upload = { domain = "u.l", url = "https://u.l/files" } }, { upload = { domain = "u.l", max_size = -1 } },
      { upload = { domain = "u.l", listen = "nowhere" } }, { upload = { domain = "u.l", colour = "red" } },
      { upload = { domain = "u.l", storage_dir = 3 } }, { upload = { domain = "u.l", expire = 0 } },
      { upload = { domain = "u.l", expire = "never" } },
    }
    for _, o in ipairs(bad) do
      assert.has_error(function() lxmpp.server(o) end)
    end
    local ok, err = pcall(lxmpp.server, { upload = { domain = "u.l", url = "https://u.l/files" } })
    assert.is_false(ok)
    assert.matches("upload url must be an https base", err)
    lxmpp.run(function()
      local srv = lxmpp.server({ listen = "127.0.0.1:0", upload = { domain = "u.localhost", listen = "127.0.0.1:0",
        storage_dir = "/nonexistent/dir" }, log_level = "error" })
      local r, msg = srv:start()
      assert.is_nil(r)
      assert.matches("storage_dir", msg)
      srv = lxmpp.server({ listen = "127.0.0.1:0", upload = "u.localhost", log_level = "error" })
      -- the default listen address may be taken on this machine: only check the shape
      if srv:start() then
        local hp
        for _, a in ipairs(srv:addresses()) do if a.kind == "upload" then hp = a.port end end
        assert.equal(5281, hp)
        srv:stop()
        assert.is_nil(net.connect("127.0.0.1", hp, 1))
      end
    end)
  end)
end)
