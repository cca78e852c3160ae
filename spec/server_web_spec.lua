-- The embedded server's web side (docs/server.md, "The web: WebSocket, BOSH,
-- host-meta"): the http/https listeners, XEP-0156 discovery readable from
-- any origin, the static folder beside them, and the options' checks.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local http = require "lxmpp.http"
local serve = require "spec.support.serve"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function get(port, path, extra)
  local o = { method = "GET", url = ("http://127.0.0.1:%d%s"):format(port, path), timeout = 10 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return http.request(o)
end

local function ports_of(srv)
  local p = {}
  for _, a in ipairs(srv:addresses()) do p[a.kind] = p[a.kind] or a.port end
  return p
end

describe("the server's web side", function()
  it("answers XEP-0156 host-meta in XRD and JSON, to any origin, with this server's endpoints", function()
    serve.run({ users = { alice = "pw" }, http = "127.0.0.1:0" }, function(srv)
      local port = assert(ports_of(srv).http)
      local status, headers, body = get(port, "/.well-known/host-meta")
      assert.equal(200, status)
      assert.equal("*", headers["access-control-allow-origin"])
      assert.matches("^application/xrd%+xml", headers["content-type"])
      local xrd = assert(core.parse_element((body:gsub("^<%?xml[^>]*%?>", ""))))
      assert.equal("XRD", xrd.name)
      assert.equal("http://docs.oasis-open.org/ns/xri/xrd-1.0", xrd.attr.xmlns)
      local hrefs = {}
      for l in xrd:childtags("Link") do hrefs[l.attr.rel] = l.attr.href end
      local web = srv.web
      if web.websocket then
        assert.equal(("ws://127.0.0.1:%d/xmpp-websocket"):format(port), hrefs["urn:xmpp:alt-connections:websocket"])
      end
      if web.bosh then
        assert.equal(("http://127.0.0.1:%d/http-bind"):format(port), hrefs["urn:xmpp:alt-connections:xbosh"])
      end
      local jstatus, jheaders, jbody = get(port, "/.well-known/host-meta.json")
      assert.equal(200, jstatus)
      assert.equal("application/json", jheaders["content-type"])
      assert.matches('^{"links":%[', jbody)
      for rel, href in pairs(hrefs) do
        assert.truthy(jbody:find('{"rel":"' .. rel .. '","href":"' .. href .. '"}', 1, true))
      end
      -- a POST is not a discovery
      local pstatus = http.request({ method = "POST", url = ("http://127.0.0.1:%d/.well-known/host-meta"):format(port),
        body = "x", timeout = 10 })
      assert.equal(405, pstatus)
    end)
  end)

  it("uses web.public_url for the advertised endpoints behind a proxy", function()
    serve.run({ users = { alice = "pw" }, http = "127.0.0.1:0", web = { public_url = "https://chat.example.test/" } },
      function(srv)
        local _, _, body = get(ports_of(srv).http, "/.well-known/host-meta.json")
        if srv.web.websocket then assert.truthy(body:find("wss://chat.example.test/xmpp-websocket", 1, true)) end
        if srv.web.bosh then assert.truthy(body:find("https://chat.example.test/http-bind", 1, true)) end
        assert.falsy(body:find("127.0.0.1", 1, true))
      end)
  end)

  it("serves a static folder beside the endpoints, and nothing outside it", function()
    local dir = tmpdir()
    write(dir .. "/index.html", "<title>chat</title>")
    write(dir .. "/app.js", "console.log(1)")
    serve.run({ users = { alice = "pw" }, http = "127.0.0.1:0", static = dir }, function(srv)
      local port = ports_of(srv).http
      local status, headers, body = get(port, "/")
      assert.equal(200, status)
      assert.equal("<title>chat</title>", body)
      assert.matches("^text/html", headers["content-type"])
      status, headers = get(port, "/app.js")
      assert.equal(200, status)
      assert.matches("javascript", headers["content-type"])
      assert.equal(404, (get(port, "/../etc/passwd")))
      assert.equal(404, (get(port, "/%2e%2e/etc/passwd")))
      assert.equal(404, (get(port, "/missing.js")))
    end)
    os.execute("rm -rf " .. dir)
  end)

  it("answers 404 without a static folder, and HTTPS with the server's certificate", function()
    serve.run({ users = { alice = "pw" }, https = "127.0.0.1:0" }, function(srv)
      local port = assert(ports_of(srv).https)
      local status = http.request({ method = "GET", url = ("https://example.test:%d/nothing"):format(port),
        address = "127.0.0.1", cafile = serve.pki().ca, timeout = 10 })
      assert.equal(404, status)
      local ok, _, body = http.request({ method = "GET", url = ("https://example.test:%d/.well-known/host-meta.json"):format(port),
        address = "127.0.0.1", cafile = serve.pki().ca, timeout = 10 })
      assert.equal(200, ok)
      if srv.web.websocket then assert.truthy(body:find("wss://example.test:" .. port .. "/xmpp-websocket", 1, true)) end
    end)
  end)

  it("stops its listeners with the server", function()
    lxmpp.run(function()
      local srv = lxmpp.server({ domain = "example.test", listen = { "127.0.0.1:0" }, http = "127.0.0.1:0", log_level = "error" })
      assert(srv:start())
      local port = ports_of(srv).http
      assert.equal(404, (get(port, "/x")))
      srv:stop()
      local none, _, cond = get(port, "/x")
      assert.is_nil(none)
      assert.equal("connection-refused", cond)
    end)
  end)

  it("refuses bad web options at lxmpp.server", function()
    for _, bad in ipairs({
      { http = 5280 }, { http = "nowhere" }, { static = 1 }, { web = "yes" }, { web = { consider_secure = "yes" } },
      { web = { public_url = "chat.example" } }, { web = { unknown = true } }, { web = { cors_origins = 1 } },
    }) do
      assert.has_error(function() lxmpp.server(bad) end)
    end
    local ok, msg
    lxmpp.run(function()
      local srv = lxmpp.server({ domain = "example.test", listen = { "127.0.0.1:0" }, http = "127.0.0.1:0", static = "/nonexistent/folder",
        log_level = "error" })
      ok, msg = srv:start()
    end)
    assert.is_nil(ok)
    assert.matches("static", msg)
  end)
end)
