-- lxmpp.stream_parser: the rules of docs/api.md "The stream parser", case by case.
local close = require "spec.support.close"
local lxmpp = require "lxmpp"
local support = require "spec.support.canon"
local data = require "spec.data.stream_cases"

local events, bytes, canon = support.events, support.bytes, support.canon

local function full(case)
  return case.raw and case.input or data.header .. case.input
end

describe("stream parser cases", function()
  for _, case in ipairs(data.cases) do
    it(case.name .. " (one buffer)", function()
      assert.same(case.expect, events(lxmpp, { full(case) }, case.opts))
    end)
    it(case.name .. " (one byte at a time)", function()
      assert.same(case.expect, events(lxmpp, bytes(full(case)), case.opts))
    end)
  end
end)

describe("stream parser behaviour", function()
  local H = data.header

  it("runs the callbacks in order before feed returns", function()
    local log = {}
    local p = lxmpp.stream_parser({
      stream_open = function() log[#log + 1] = "open" end,
      stanza = function(s) log[#log + 1] = s.name end,
      stream_close = function() log[#log + 1] = "close" end,
    })
    assert.is_true(p:feed(H .. "<a/><b/></stream:stream>"))
    assert.same({ "open", "a", "b", "close" }, log)
  end)

  it("delivers a stanza the moment its last '>' is fed", function()
    local got = 0
    local p = lxmpp.stream_parser({ stanza = function() got = got + 1 end })
    assert.is_true(p:feed(H))
    local s = "<message to='a@b'><body>x</body></message>"
    for i = 1, #s - 1 do
      assert.is_true(p:feed(s:sub(i, i)))
      assert.equal(0, got)
    end
    assert.is_true(p:feed(">"))
    assert.equal(1, got)
  end)

  it("delivers a stanza with one large token as soon as its last byte is fed (no reparse deferral)", function()
    -- expat 2.6 (and distributions' backports) defer reparsing a large
    -- unfinished token until much more input has arrived; the parser turns
    -- that off where the loaded expat has it, so the last byte of a big
    -- stanza does not wait for bytes that may never come
    local got = 0
    local p = lxmpp.stream_parser({ stanza = function() got = got + 1 end })
    assert.is_true(p:feed(H))
    local s = "<message to='a@b' id='" .. string.rep("x", 40000) .. "'><body>"
      .. string.rep("y", 40000) .. "</body></message>"
    for i = 1, #s - 1, 1000 do
      assert.is_true(p:feed(s:sub(i, math.min(i + 999, #s - 1))))
      assert.equal(0, got)
    end
    assert.is_true(p:feed(">"))
    assert.equal(1, got)
  end)

  it("gives stanzas the stanza metatable, children included", function()
    local got
    local p = lxmpp.stream_parser({ stanza = function(s) got = s end })
    assert(p:feed(H .. "<message><body>hi</body></message>"))
    assert.is_true(lxmpp.stanza.is_stanza(got))
    assert.equal("hi", got:get_child_text("body"))
    assert.is_true(lxmpp.stanza.is_stanza(got.tags[1]))
    assert.equal(got.tags[1], got[1])
  end)

  it("stays failed after a violation until reset", function()
    local n = 0
    local p = lxmpp.stream_parser({ stanza = function() n = n + 1 end })
    local ok, msg, cond = p:feed(H .. "<a><!-- no --></a><b/>")
    assert.is_nil(ok)
    assert.equal("restricted-xml", cond)
    assert.matches("comment", msg)
    ok, msg, cond = p:feed("<c/>")
    assert.matches("comment", msg)
    assert.is_nil(ok)
    assert.equal("restricted-xml", cond)
    assert.equal(0, n)
    p:reset()
    assert.is_true(p:feed(H .. "<d/>"))
    assert.equal(1, n)
  end)

  it("delivers nothing after a violation, even from the same buffer", function()
    local names = {}
    local p = lxmpp.stream_parser({ stanza = function(s) names[#names + 1] = s.name end })
    assert.is_nil(p:feed(H .. "<ok/><bad>&evil;</bad><after/>"))
    assert.same({ "ok" }, names)
  end)

  it("reset() from a handler stops the feed and returns the unparsed bytes (STARTTLS)", function()
    local seen = {}
    local p
    p = lxmpp.stream_parser({
      stanza = function(s)
        seen[#seen + 1] = s.name
        if s.name == "proceed" then p:reset() end
      end,
    })
    local injected = "<message from='evil@example'>plaintext injection</message>"
    local ok, rest = p:feed(H .. "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" .. injected)
    assert.is_true(ok)
    assert.equal(injected, rest)
    assert.same({ "proceed" }, seen)
    -- the parser is fresh: a new stream header is expected
    assert.is_true(p:feed(H .. "<presence/>"))
    assert.same({ "proceed", "presence" }, seen)
  end)

  it("reset() in stream_open stops before the first stanza", function()
    local p, n = nil, 0
    p = lxmpp.stream_parser({ stream_open = function() p:reset() end,
                              stanza = function() n = n + 1 end })
    local ok, rest = p:feed(H .. "<presence/>")
    assert.is_true(ok)
    assert.equal("<presence/>", rest)
    assert.equal(0, n)
  end)

  it("raises a handler's error after the parser returned, then stays failed", function()
    local p = lxmpp.stream_parser({ stanza = function() error("boom") end })
    local ok, err = pcall(p.feed, p, H .. "<a/><b/>")
    assert.is_false(ok)
    assert.matches("boom", err)
    local r, msg = p:feed("<c/>")
    assert.is_nil(r)
    assert.matches("handler", msg)
    p:reset()
    assert.has_error(function() p:feed(H .. "<x/>") end)
  end)

  it("refuses feed() from its own handler", function()
    local p
    p = lxmpp.stream_parser({ stanza = function() p:feed("<x/>") end })
    local ok, err = pcall(p.feed, p, H .. "<a/>")
    assert.is_false(ok)
    assert.matches("own handlers", err)
  end)

  it("close() is safe twice, from a handler too, and a closed parser refuses use", function()
    local p = lxmpp.stream_parser({})
    p:close()
    p:close()
    assert.has_error(function() p:feed("<a/>") end, "stream parser is closed")
    local q
    q = lxmpp.stream_parser({ stanza = function() q:close() end })
    local ok, rest = q:feed(H .. "<a/><b/>")
    assert.is_true(ok)
    assert.equal("", rest)
    q:close()
    assert.has_error(function() q:feed("<a/>") end)
  end)

  it("works with the to-be-closed syntax", function()
    local p
    if close.native then
      local f = assert(load([[
        local lxmpp = ...
        local p <close> = lxmpp.stream_parser({})
        return p
      ]]))
      p = f(lxmpp)
    else                             -- (no such syntax before 5.4: its __close)
      p = lxmpp.stream_parser({})
      close.scope(p)
    end
    assert.matches("closed", tostring(p))
  end)

  it("rejects bad options and handlers as programmer errors", function()
    assert.has_error(function() lxmpp.stream_parser() end)
    assert.has_error(function() lxmpp.stream_parser({}, { max_depth = 0 }) end)
    assert.has_error(function() lxmpp.stream_parser({}, { max_stanza_size = "big" }) end)
    assert.has_error(function() lxmpp.stream_parser({}, 5) end)
  end)

  it("keeps memory bounded by the limit whatever the chunking", function()
    for _, chunk in ipairs({ 1, 7, 1000, 65536 }) do
      local p = lxmpp.stream_parser({}, { max_stanza_size = 10000 })
      assert(p:feed(H))
      local piece = ("x"):rep(chunk)
      local ok, cond, peak = true, nil, 0
      assert(p:feed("<message><body>"))
      for _ = 1, math.ceil(2000000 / chunk) do
        ok, _, cond = p:feed(piece)
        peak = math.max(peak, p:memory())
        if not ok then break end
      end
      assert.is_nil(ok)
      assert.equal("policy-violation", cond)
      assert.is_true(peak < 200000, "peak " .. peak .. " with chunk " .. chunk)
      p:close()
    end
  end)

  it("bounds an unfinished start tag's buffered bytes", function()
    local p = lxmpp.stream_parser({}, { max_stanza_size = 5000 })
    assert(p:feed(H .. "<message to='"))
    local ok, cond, peak
    peak = 0
    for _ = 1, 1000 do
      ok, _, cond = p:feed(("a"):rep(100))
      peak = math.max(peak, p:memory())
      if not ok then break end
    end
    assert.is_nil(ok)
    assert.equal("policy-violation", cond)
    assert.is_true(peak < 100000)
  end)

  it("bounds tree memory against namespace-prefix amplification", function()
    local long = ("u"):rep(2000)
    local parts = { H, "<message xmlns:a='urn:", long, "' xmlns:b='urn:b", long, "'>" }
    for i = 1, 400 do parts[#parts + 1] = (i % 2 == 0) and "<a:x/>" or "<b:x/>" end
    parts[#parts + 1] = "</message>"
    local p = lxmpp.stream_parser({}, { max_stanza_size = 8192 })
    local ok, _, cond = p:feed(table.concat(parts))
    assert.is_nil(ok)
    assert.equal("policy-violation", cond)
  end)

  it("restarts cleanly after a stream close", function()
    local log = {}
    local p = lxmpp.stream_parser({
      stream_open = function(a) log[#log + 1] = "open " .. a.to end,
      stanza = function(s) log[#log + 1] = s.name end,
      stream_close = function() log[#log + 1] = "close" end,
    })
    assert(p:feed(H .. "<a/></stream:stream>"))
    p:reset()
    assert(p:feed(H .. "<b/>"))
    assert.same({ "open example.com", "a", "close", "open example.com", "b" }, log)
  end)

  it("after reset(), skips the whitespace left from the old stream before the new header (go-xmpp)", function()
    -- go-xmpp writes "</auth>\n", and the "\n" reaches the parser after
    -- the SASL restart, in the same read or in the next one
    local restarted = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
      "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'><presence/>"
    for _, tail in ipairs({ "\n", "\r\n", " \t\r\n" }) do
      for _, split in ipairs({ "same read", "next read", "byte by byte" }) do
        local log, p = {}, nil
        p = lxmpp.stream_parser({
          stream_open = function() log[#log + 1] = "open" end,
          stanza = function(st)
            log[#log + 1] = st.name
            if st.name == "success" then p:reset() end
          end,
        })
        local first = H .. "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" .. (split == "same read" and tail or "")
        local ok, leftover = p:feed(first)
        assert.is_true(ok)
        local rest = (leftover or "") .. (split == "same read" and "" or tail) .. restarted
        local chunks = split == "byte by byte" and support.bytes(rest) or { rest }
        for _, c in ipairs(chunks) do assert.is_true(p:feed(c), split) end
        assert.same({ "open", "success", "open", "presence" }, log, split)
      end
    end
  end)

  it("after reset(), refuses anything but whitespace before the new header", function()
    for _, junk in ipairs({ "x", "\n.", "\0", "\v", "\n\239\187\191" }) do
      local p = lxmpp.stream_parser({})
      assert.is_true(p:feed(H .. "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"))
      p:reset()
      local ok, msg, cond = p:feed(junk .. H)
      assert.is_nil(ok, ("%q was accepted"):format(junk))
      assert.is_string(msg)
      assert.truthy(cond == "not-well-formed" or cond == "unsupported-encoding", cond)
    end
  end)

  it("keeps the canonical form of a parsed header", function()
    assert.equal("<x a=1></x>", canon({ name = "x", attr = { a = "1" } }))
  end)
end)
