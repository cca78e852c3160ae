-- csrc/net_io.c reads every connection into read buffers its loop shares (an
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

-- A connection quiet for a while (half a second to a second), between
-- stanzas with everything read parsed, gives its parser's memory back
-- (conn:info().parser_idle); it is rebuilt from the stream header with the
-- next read: namespaces declared there, the default
-- namespace, byte positions, limits and restarts carry on unchanged.
describe("idle stream parsers", function()
  after_each(assert_clean)

  local function accept(opts, tls_ctx)
    local rec = { stanzas = {}, opens = 0 }
    rec.l = assert(net.listen("127.0.0.1", 0, function(conn)
      rec.conn = conn
      conn:on("open", function() rec.opens = rec.opens + 1 end)
      conn:on("stanza", function(s)
        rec.stanzas[#rec.stanzas + 1] = s
        if s.name == "success" then conn:restart() end
      end)
      conn:on("parse-error", function(msg, cond) rec.error, rec.cond = msg, cond; conn:abort() end)
      conn:on("eof", function() conn:close() end)
      conn:parse(opts)
      if tls_ctx then conn:starttls(tls_ctx) end
    end))
    return rec
  end

  local function idle_stream(sctx, cctx)
    lxmpp.run(function()
      local rec = accept(nil, sctx)
      local c = client(rec.l:port(), cctx)
      assert(c:write(HDR:gsub("to='x'", "to='x' xmlns:x='urn:x'")))
      wait_until(function() return rec.opens == 1 end)
      wait_until(function() return rec.conn:info().parser_idle end)
      assert(c:write("<message><x:y a='1'/></message>"))
      wait_until(function() return #rec.stanzas == 1 end)
      -- a connection that just read stays as it is until it has been quiet
      -- for a while (busy ones do not rebuild their parser at every read)
      assert.is_false(rec.conn:info().parser_idle)
      wait_until(function() return rec.conn:info().parser_idle end)
      assert(c:write(" <iq xmlns='urn:other'><q/></iq>"))
      wait_until(function() return #rec.stanzas == 2 end)
      local m, iq = rec.stanzas[1], rec.stanzas[2]
      assert.equal("message", m.name)
      assert.is_nil(m.attr.xmlns)                       -- the stream's default namespace
      assert.equal("urn:x", m.tags[1].attr.xmlns)
      assert.equal("y", m.tags[1].name)
      assert.equal("1", m.tags[1].attr.a)
      assert.equal("urn:other", iq.attr.xmlns)
      assert.is_nil(iq.tags[1].attr.xmlns)
      -- a restart after an idle period, the new header in a later read
      wait_until(function() return rec.conn:info().parser_idle end)
      assert(c:write("<success/>"))
      wait_until(function() return #rec.stanzas == 3 end)
      assert(c:write(HDR .. "<after/>"))
      wait_until(function() return #rec.stanzas == 4 end)
      assert.equal(2, rec.opens)
      assert.equal("after", rec.stanzas[4].name)
      -- a stanza split over two reads keeps its parser in between
      assert(c:write("<split>"))
      lxmpp.sleep(0.05)
      assert.is_false(rec.conn:info().parser_idle)
      assert(c:write("</split>"))
      wait_until(function() return #rec.stanzas == 5 end)
      -- and the other way round, after idle periods on both ends
      local got
      c:on("stanza", function(s) got = s end)
      c:parse()
      wait_until(function() return rec.conn:info().parser_idle end)
      assert(rec.conn:write(HDR .. "<back/>"))
      wait_until(function() return got ~= nil end)
      assert.equal("back", got.name)
      c:close()
      rec.l:close()
    end)
  end

  it("keeps the header's namespaces and the stream going across idle periods", function()
    idle_stream(nil, nil)
  end)

  it("does the same over TLS, whose buffers are given back in between", function()
    local pki = require("spec.support.pki").get()
    idle_stream(assert(core.tls_context({ mode = "server", cert = pki.certs.good.cert, key = pki.certs.good.key })),
      assert(core.tls_context({ mode = "client", cafile = pki.ca })))
  end)

  it("counts bytes and limits from the start of the stream, idle or not", function()
    lxmpp.run(function()
      local rec = accept({ max_stanza_size = 200 })
      local c = assert(net.connect("127.0.0.1", rec.l:port()))
      assert(c:write(HDR))
      wait_until(function() return rec.opens == 1 end)
      for i = 1, 3 do
        wait_until(function() return rec.conn:info().parser_idle end)
        assert(c:write("<m>" .. ("x"):rep(150) .. "</m>"))
        wait_until(function() return #rec.stanzas == i end)
      end
      wait_until(function() return rec.conn:info().parser_idle end)
      assert(c:write("<m>" .. ("x"):rep(250) .. "</m>"))
      wait_until(function() return rec.cond ~= nil end)
      assert.equal("policy-violation", rec.cond)
      rec.l:close()
      c:abort()
    end)
    -- the error position counts from the first byte of the stream: the same
    -- whether the parser went idle before the bad stanza or not
    local errors = {}
    for _, idle in ipairs({ true, false }) do
      lxmpp.run(function()
        local rec = accept()
        local c = assert(net.connect("127.0.0.1", rec.l:port()))
        if idle then
          assert(c:write(HDR .. "<a/>"))
          wait_until(function() return #rec.stanzas == 1 end)
          wait_until(function() return rec.conn:info().parser_idle end)
          assert(c:write("<b></c>"))
        else
          assert(c:write(HDR .. "<a/><b></c>"))
        end
        wait_until(function() return rec.cond ~= nil end)
        assert.equal("not-well-formed", rec.cond)
        errors[#errors + 1] = rec.error
        rec.l:close()
        c:abort()
      end)
    end
    assert.matches("at byte " .. (#HDR + #"<a/><b></"), errors[2], 1, true)
    assert.equal(errors[2], errors[1])
  end)
end)

describe("idle stream parsers and large headers", function()
  after_each(assert_clean)

  it("never go idle after a stream header over 2 KiB (each wake-up would parse it again)", function()
    lxmpp.run(function()
      local conn, n = nil, 0
      local l = assert(net.listen("127.0.0.1", 0, function(c)
        conn = c
        c:on("stanza", function() n = n + 1 end)
        c:parse()
      end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      assert(c:write(HDR:gsub("to='x'", "to='x' pad='" .. ("p"):rep(3000) .. "'") .. "<a/>"))
      wait_until(function() return n == 1 end)
      lxmpp.sleep(0.05)
      assert.is_false(conn:info().parser_idle)
      assert(c:write("<b/>"))
      wait_until(function() return n == 2 end)
      c:close()
      l:close()
      conn:close()
    end)
  end)
end)
