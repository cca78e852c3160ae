-- HTTP upload (lua/lxmpp/plugins/upload.lua) against Prosody's
-- mod_http_file_share over HTTPS, and the HTTP client under it
-- (lua/lxmpp/http.lua) against scripted peers: malformed slots and
-- responses are refused.
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local net = require "lxmpp.net"
local http = require "lxmpp.http"
local prosody = require "spec.support.prosody"
local serve = require "spec.support.serve"

local USERS = { alice = "alice-pw" }
local UPLOAD = "upload.example.test"

describe("http client", function()
  it("parses URLs strictly", function()
    local u = assert(http.parse_url("https://Example.TEST:8443/a/b?x=1#frag"))
    assert.same({ scheme = "https", host = "example.test", port = 8443, path = "/a/b?x=1" }, u)
    assert.equal(443, assert(http.parse_url("https://h")).port)
    assert.equal("::1", assert(http.parse_url("http://[::1]:80/")).host)
    for _, bad in ipairs({ "ftp://h/", "https://user:pw@h/", "https://h:99999/", "https:///x", "https://h/a b",
      "https://h/a\r\nX: y", "nonsense" }) do
      assert.is_nil(http.parse_url(bad), bad)
    end
  end)

  -- A plain-HTTP peer on loopback that answers every request with `reply`.
  local function with_peer(reply, fn)
    lxmpp.run(function()
      local got = {}
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conn:on("data", function(bytes)
          got[#got + 1] = bytes
          if table.concat(got):find("\r\n\r\n", 1, true) then
            conn:write(reply)
            conn:close()
          end
        end)
        conn:raw()
      end))
      local ok, err = pcall(fn, "http://127.0.0.1:" .. l:port() .. "/x", got)
      l:close()
      net.abort_all()
      if not ok then error(err, 0) end
    end)
  end

  it("reads content-length, chunked and close-delimited bodies", function()
    with_peer("HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhelloEXTRA", function(url, got)
      local status, headers, body = http.request({ method = "PUT", url = url, body = "data",
        headers = { ["Content-Type"] = "text/plain" } })
      assert.equal(201, status)
      assert.equal("1", headers["x-a"])
      assert.equal("hello", body)
      local req = table.concat(got)
      assert.matches("^PUT /x HTTP/1%.1\r\n", req)
      assert.matches("\r\nContent%-Length: 4\r\n", req)
      assert.matches("\r\nContent%-Type: text/plain\r\n", req)
    end)
    with_peer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", function(url)
      local status, _, body = http.request({ url = url })
      assert.equal(200, status)
      assert.equal("abcde", body)
    end)
    with_peer("HTTP/1.0 200 OK\r\n\r\nuntil the end", function(url)
      local _, _, body = http.request({ url = url })
      assert.equal("until the end", body)
    end)
  end)

  it("refuses malformed or oversized responses and header injection", function()
    with_peer("SMTP ready\r\n\r\n", function(url)
      local r, _, cond = http.request({ url = url })
      assert.is_nil(r)
      assert.equal("bad-format", cond)
    end)
    with_peer("HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", function(url)
      local r, _, cond = http.request({ url = url })
      assert.is_nil(r)
      assert.equal("bad-format", cond)
    end)
    with_peer("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" .. ("x"):rep(100000), function(url)
      local r, _, cond = http.request({ url = url, max_response = 1000 })
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
    end)
    with_peer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", function(url)
      local r, _, cond = http.request({ url = url })
      assert.is_nil(r)
      assert.equal("closed", cond)
    end)
    with_peer("HTTP/1.1 200 OK\r\n\r\n", function(url, got)
      local r, _, cond = http.request({ url = url, headers = { ["X-Evil"] = "a\r\nHost: other" } })
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      assert.equal(0, #got)                                  -- nothing was sent
    end)
    lxmpp.run(function()
      local r, _, cond = http.request({ url = "http://192.0.2.1/x" })      -- plain http off loopback
      assert.is_nil(r)
      assert.equal("not-acceptable", cond)
    end)
  end)
end)

describe("HTTP upload against Prosody", function()
  local srv
  setup(function()
    srv = prosody.start({ users = USERS, https = true, components = { { UPLOAD, "http_file_share",
      "http_host = 'example.test'", "http_file_share_size_limit = 100000" } } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("finds the service, uploads over verified HTTPS and the file can be fetched", function()
    local ok, err = pcall(lxmpp.run, function()
      local c = assert(lxmpp.connect({ jid = "alice@example.test/r", password = USERS.alice, host = "127.0.0.1",
        port = srv.port, cafile = srv.ca }))
      local service, max = c:upload_service()
      assert.equal(UPLOAD, service)
      assert.equal(100000, max)
      local data = ("lxmpp upload\n"):rep(500)
      local url, slot = c:upload(data, { name = "notes.txt", content_type = "text/plain", address = "127.0.0.1" })
      assert.is_string(url, slot)
      assert.matches("^https://example%.test:" .. srv.https_port .. "/", url)
      local status, headers, body = http.request({ url = url, cafile = srv.ca, address = "127.0.0.1" })
      assert.equal(200, status)
      assert.equal(data, body)
      assert.matches("^text/plain", headers["content-type"])
      -- too large: refused before any HTTP
      local r, msg, cond = c:upload(("x"):rep(100001), { name = "big.bin", address = "127.0.0.1" })
      assert.is_nil(r)
      assert.is_string(msg)
      assert.equal("not-acceptable", cond)
      -- the certificate is checked: the system store does not know the suite's CA
      r, msg, cond = c:upload("hi", { name = "x.txt", address = "127.0.0.1", cafile = "/etc/ssl/certs/ca-certificates.crt" })
      assert.is_nil(r)
      assert.equal("tls-verify-failed", cond, msg)
      c:close()
      net.abort_all()
    end)
    if not ok then error(err, 0) end
    require "spec.support.clean" ()
  end)
end)

describe("HTTP upload slots from a scripted service", function()
  it("refuses slots that are not https or smuggle headers, and drops headers XEP-0363 does not allow", function()
    serve.run({ users = USERS, components = { ["up.example.test"] = "s" }, component_listen = "127.0.0.1:0" },
      function(_, port, ports)
        local c = assert(serve.login(port, "alice", USERS.alice))
        local comp = lxmpp.component({ jid = "up.example.test", secret = "s", host = "127.0.0.1", port = ports.component })
        assert(comp:connect())
        local slots = {
          { put = "http://up.example.test/put", get = "https://up.example.test/get" },
          { put = "https://up.example.test/put", get = "https://up.example.test/get",
            headers = { Authorization = "Basic x\r\nHost: evil" } },
          { put = "https://up.example.test/put", get = "https://up.example.test/get",
            headers = { Authorization = "Bearer t", ["X-Other"] = "dropped", Cookie = "c=1" } },
          { get = "https://up.example.test/get" },
        }
        local n = 0
        comp:handle_iq("urn:xmpp:http:upload:0", function(iq)
          n = n + 1
          local s = slots[n]
          local r = st.reply(iq):tag("slot", { xmlns = "urn:xmpp:http:upload:0" })
          if s.put then
            r:tag("put", { url = s.put })
            for k, v in pairs(s.headers or {}) do r:text_tag("header", v, { name = k }) end
            r:up()
          end
          return r:tag("get", { url = s.get }):up()
        end)
        local slot, _, cond = c:upload_slot("up.example.test", "a.txt", 3)
        assert.is_nil(slot)
        assert.equal("bad-request", cond)
        slot, _, cond = c:upload_slot("up.example.test", "a.txt", 3)
        assert.is_nil(slot)
        assert.equal("bad-request", cond)
        slot = assert(c:upload_slot("up.example.test", "a.txt", 3, "text/plain"))
        assert.same({ Authorization = "Bearer t", Cookie = "c=1" }, slot.headers)
        slot, _, cond = c:upload_slot("up.example.test", "a.txt", 3)
        assert.is_nil(slot)
        assert.equal("bad-request", cond)
        assert.has_error(function() c:upload_slot("up.example.test", "a.txt", -1) end)
        comp:close(); c:close()
      end)
  end)
end)
