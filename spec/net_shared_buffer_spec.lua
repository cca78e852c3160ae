-- csrc/net.c reads every connection into read buffers its loop shares (an
-- idle connection holds none). A connection paused in the middle of a read
-- keeps its unparsed bytes, including those of a parse suspended at the
-- event, while other connections read into the same buffers: plaintext and
-- TLS, with a stream restart after the resume.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"

local HDR = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x'>"
local assert_clean = require "spec.support.clean"

local function wait_until(pred, timeout)
  local t0 = core.now()
  while not pred() do
    if core.now() - t0 > (timeout or 5) then error("timed out waiting", 2) end
    lxmpp.sleep(0.005)
  end
end

-- A listener recording, per accepted connection, stream headers and
-- stanza names; <pause/> pauses the connection, <success/> restarts it.
local function listener(tls_ctx)
  local rec = { conns = {} }
  rec.l = assert(net.listen("127.0.0.1", 0, function(conn)
    local r = { conn = conn, names = {}, opens = {} }
    rec.conns[#rec.conns + 1] = r
    conn:on("open", function(attr) r.opens[#r.opens + 1] = attr.to end)
    conn:on("stanza", function(s)
      r.names[#r.names + 1] = s.name .. (s:get_text() ~= "" and ("=" .. #s:get_text()) or "")
      if s.name == "pause" then conn:pause(); rec.paused = r end
      if s.name == "success" then conn:restart() end
    end)
    conn:on("parse-error", function(msg) r.error = msg; conn:abort() end)
    conn:on("eof", function() conn:close() end)
    conn:parse()
    if tls_ctx then conn:starttls(tls_ctx) end
  end))
  return rec
end

local function client(port, tls_ctx)
  local c = assert(net.connect("127.0.0.1", port))
  if tls_ctx then
    local done = false
    c:on("tls-done", function() done = true end)
    assert(c.c:starttls(tls_ctx, "example.test"))
    wait_until(function() return done end)
  end
  return c
end

local function scenario(server_ctx, client_ctx)
  lxmpp.run(function()
    local rec = listener(server_ctx)
    local a = client(rec.l:port(), client_ctx)
    -- one write: the pause lands in the middle of it, the restart after it
    assert(a:write(HDR .. "<a/><pause/><success/>" .. HDR:gsub("to='x'", "to='y'") .. "<after/><last>tail</last>"))
    wait_until(function() return rec.paused ~= nil end)
    -- another connection reads a lot through the same buffers meanwhile
    local b = client(rec.l:port(), client_ctx)
    local filler = ("0123456789"):rep(100)
    assert(b:write(HDR .. ("<z>" .. filler .. "</z>"):rep(60)))
    wait_until(function() return #rec.conns == 2 and #rec.conns[2].names == 60 end)
    local ra, rb = rec.conns[1], rec.conns[2]
    assert.same({ "a", "pause" }, ra.names)
    assert.equal("z=1000", rb.names[60])
    ra.conn:resume()
    wait_until(function() return #ra.names == 5 or ra.error end)
    assert.is_nil(ra.error)
    assert.same({ "a", "pause", "success", "after", "last=4" }, ra.names)
    assert.same({ "x", "y" }, ra.opens)
    -- paused again with nothing left, then more bytes: read as usual
    ra.conn:pause()
    ra.conn:resume()
    assert(a:write("<more/>"))
    wait_until(function() return #ra.names == 6 end)
    assert.equal("more", ra.names[6])
    a:close()
    b:close()
    rec.l:close()
  end)
end

describe("shared read buffers", function()
  after_each(assert_clean)

  it("a paused plaintext connection keeps the rest of its read", function()
    scenario(nil, nil)
  end)

  it("a paused TLS connection keeps the rest of its plaintext", function()
    local pki = require("spec.support.pki").get()
    local sctx = assert(core.tls_context({ mode = "server", cert = pki.certs.good.cert, key = pki.certs.good.key }))
    local cctx = assert(core.tls_context({ mode = "client", cafile = pki.ca }))
    scenario(sctx, cctx)
  end)
end)
