-- make_corpus.lua - writes the seed corpus of the fuzz targets.
--
--   lua5.4 fuzz/make_corpus.lua DIR
--
-- One seed per case of spec/data/stream_cases.lua (the stream as the spec
-- feeds it, with the case's limits), then element-mode seeds (single stanzas)
-- and seeds for the escaping and attribute round trips of fuzz_roundtrip.
-- Each file is the 8-byte header described at the top of fuzz/fuzz_stream.c
-- followed by the payload; both targets read that layout.
local data = require "spec.data.stream_cases"

local dir = arg[1]
if not dir or dir == "" then
  io.stderr:write("usage: lua5.4 fuzz/make_corpus.lua DIR\n")
  os.exit(2)
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
assert(os.execute("mkdir -p " .. sh_quote(dir)), "cannot create " .. dir)

-- Header byte 0 flags (see fuzz_stream.c).
local ELEMENT, SMALL, CHAOS, FINAL = 1, 2, 4, 64

-- Limits bytes 1 and 2 for a case's opts; fields not given keep the default
-- (nibble 0).
local function limit_bytes(opts)
  local a, b = 0, 0
  if opts.max_stanza_size then
    local n = opts.max_stanza_size // 25
    assert(n * 25 == opts.max_stanza_size and n >= 1 and n <= 15,
      "max_stanza_size not encodable: " .. opts.max_stanza_size)
    a = a | n
  end
  if opts.max_depth then
    assert(opts.max_depth >= 1 and opts.max_depth <= 15)
    a = a | opts.max_depth << 4
  end
  if opts.max_attributes then
    assert(opts.max_attributes <= 14)
    b = b | (opts.max_attributes + 1)
  end
  if opts.max_children then
    assert(opts.max_children <= 14)
    b = b | (opts.max_children + 1) << 4
  end
  return a, b
end

local count = 0

-- seed{ payload, element = bool, final = bool, opts = table, chunk = 0..7,
--       chaos = bool, reset = n, repeats = n, split = 0..255,
--       repeat_from = payload offset (sets split) }
local function seed(t)
  local flags = (t.element and ELEMENT or 0) | (t.chaos and CHAOS or 0) |
    ((t.chunk or count % 8) << 3) | (t.final and FINAL or 0)
  local a, b = 0, 0
  if t.opts then
    flags = flags | SMALL
    a, b = limit_bytes(t.opts)
  end
  local split = t.split or 128
  if t.repeat_from then -- the byte that makes fuzz_stream cut just there
    split = math.min(255, (t.repeat_from * 256 + #t[1] - 1) // #t[1])
  end
  local header = string.char(flags, a, b, count & 0xff, (count >> 8) & 0xff,
    t.reset or 0, t.repeats or 0, split)
  count = count + 1
  local path = ("%s/seed-%03d"):format(dir, count)
  local f = assert(io.open(path, "wb"))
  assert(f:write(header, t[1]))
  assert(f:close())
end

-- Every spec case, as the spec feeds it (not final: the transport stays
-- open), plus a final, chaos variant of each.
for _, case in ipairs(data.cases) do
  local s = case.raw and case.input or data.header .. case.input
  seed{ s, opts = case.opts }
  seed{ s, opts = case.opts, final = true, chaos = true, reset = 2 }
end

-- Streams that reach the limits another way: a short prefix naming a long
-- URI on every child (the tree's memory budget), keepalive and stanza floods
-- repeated up to 64 KiB (memory must not grow with the stream), restarts.
local H = data.header
local long_ns = H:gsub("xmlns='jabber:client'", "xmlns='jabber:client' xmlns:p='urn:" ..
  ("x"):rep(180) .. "'")
seed{ long_ns .. "<message>" .. ("<p:a/><b/>"):rep(30) .. "</message>",
  opts = { max_stanza_size = 375 } }
seed{ long_ns .. "<message>" .. ("<p:a/>"):rep(40) .. "</message>", chunk = 0 }
seed{ H .. "<presence/> \n", opts = { max_stanza_size = 150 }, repeats = 255, repeat_from = #H }
seed{ H .. "<message><body>hi</body></message>", opts = { max_stanza_size = 175 },
  repeats = 255, repeat_from = #H, chunk = 2 }
seed{ H .. "<a/>" .. "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" ..
  "</stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" .. H .. "<b/>", reset = 4 }
seed{ H .. "<presence/>", reset = 2, repeats = 20, split = 0, chaos = true, chunk = 3 }
-- UTF-16LE without a byte order mark (RFC 6120 §11.6: UTF-8 only), whole and
-- byte by byte.
local utf16le = (H .. "<presence/>"):gsub(".", "%0\0")
seed{ utf16le, chunk = 7 }
seed{ utf16le, chunk = 0 }

-- Single stanzas, parsed as one element by both targets.
local stanzas = {
  "<message to='a@b'><body>hi &amp; \195\169</body></message>",
  "<message xmlns='jabber:client' to='a@b/c' type='chat' id='x1'><body>hello</body>" ..
    "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
  "<iq type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='x@y'/></query></iq>",
  "<presence xml:lang='de'><status>abwesend</status><priority>5</priority></presence>",
  "<message xmlns:p='urn:p' p:a='1' p:b='&lt;&amp;&gt;'><p:x p:c='2'><y/></p:x></message>",
  "<message><x xmlns='urn:a'><body xmlns='jabber:client'>t</body></x><z xmlns=''/></message>",
  "<message><body>a&amp;b&lt;c&gt;d&quot;e&apos;f&#65;&#x42;<![CDATA[<&>]]>g</body></message>",
  "<message><body>line\r\nnext&#13;&#10;tab\t&#9;end</body></message>",
  "<message to='a&#9;b&#10;c&#13;d' from=\"q'uote\" id='line\nbreak\ttab'/>",
  "<message>a<b/>c<d>e</d>f</message>",
  "<message><body>\195\169\228\184\173\240\159\152\128 &#x1F600; &#233;</body></message>",
  "<\195\169l\195\169ment attr-\228\184\173='v' a.b_c-d='1'/>",
  "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>" ..
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
  "<r xmlns='urn:xmpp:sm:3' h='4294967295'/>",
  "<a><b><c><d><e><f/></e></d></c></b></a>",
  "<?xml version='1.0' encoding='UTF-8'?><message/>",
  "\239\187\191<message/>",
  "<message><!-- no --></message>",
  "<message>&nbsp;</message>",
  "<message to='x'/><trailing/>",
  "<message><p:x/></message>",
  "<message xmlns:x='http://www.w3.org/XML/1998/namespace'/>",
}
for _, s in ipairs(stanzas) do
  seed{ s, element = true, final = true }
end
seed{ "", element = true, final = true }
seed{ " \n\t", element = true, final = true }
seed{ "<message><body>not closed", element = true, final = true, chaos = true }
-- Stanzas of the spec cases as single elements (trailing junk included).
for _, case in ipairs(data.cases) do
  if not case.raw then
    local s = case.input:gsub("</stream:stream>$", "")
    seed{ s, element = true, final = true, opts = case.opts }
  end
end

-- Escaping and lx_write_attr round trips: "A\0B" cuts the payload at the
-- NUL into attribute key/value A and text/value B.
local cuts = {
  "to\0a@b/c",
  "xml:lang\0de-CH",
  "urn:x:ns\1attr\0v&lue 'quoted' \"double\"",
  "http://www.w3.org/XML/1998/namespace\1lang\0en",
  "http://www.w3.org/2000/xmlns/\1a\0reserved",
  "xmlns\0urn:default",
  "xmlns\0",
  "xmlns:p\0urn:p",
  "tab\tlf\ncr\rcrlf\r\nend\0tab\tlf\ncr\rcrlf\r\nend",
  "<&>'\"]]>\0<&>'\"]]>",
  "\195\169\228\184\173\240\159\152\128\0\239\191\189\244\143\191\191",
  "\237\160\128\0\192\188",
  "\1\2\31\0\127\194\128",
  " leading and trailing \0 spaces ",
}
for _, s in ipairs(cuts) do
  seed{ s, element = true, final = true }
end

-- fuzz_tls: byte 0 picks the side (even: our server, odd: our client) and the
-- chunk size; the rest is the peer's records. Seeds: a real ClientHello (to
-- our server) and a real server flight answering one (to our client), made
-- by lxmpp.core's own TLS engine, one record size per chunking.
do
  local core = require "lxmpp.core"
  local sctx = core.tls_context{ mode = "server", domain = "fuzz.example", alpn = "xmpp-client" }
  local cctx = core.tls_context{ mode = "client", insecure = true, alpn = "xmpp-client" }
  local client, server = cctx:session("fuzz.example"), sctx:session()
  client:handshake()
  local hello = client:take()
  server:recv(hello)
  server:handshake()
  local flight = server:take()
  local function tls_seed(name, side, payload)
    local f = assert(io.open(dir .. "/tls-" .. name, "wb"))
    assert(f:write(string.char(side), payload))
    f:close()
  end
  tls_seed("client-hello", 0x7E, hello)
  tls_seed("client-hello-small", 0x00, hello)
  tls_seed("server-flight", 0x7F, flight)
  tls_seed("server-flight-small", 0x01, flight)
  client:close() server:close() sctx:close() cctx:close()
end

-- fuzz_ws: byte 0 bit 0 the role (0: our server, the peer masks), bits 1-3
-- the chunk size class; byte 1 max_message / 64 (odd: small stanzas);
-- bytes 2-3 the chunking seed; then the peer's frames.
do
  local FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
  local function frame(payload, op, key, fin)
    local n = #payload
    local b0 = (fin == false and 0 or 0x80) | (op or 1)
    local m = key and 0x80 or 0
    local head = n < 126 and string.char(b0, m | n) or
      n < 65536 and string.char(b0, m | 126) .. string.pack(">I2", n) or
      string.char(b0, m | 127) .. string.pack(">I8", n)
    if not key then return head .. payload end
    local k, out = { key:byte(1, 4) }, {}
    for i = 1, n do out[i] = string.char(payload:byte(i) ~ k[(i - 1) % 4 + 1]) end
    return head .. key .. table.concat(out)
  end
  local n = 0
  local function ws_seed(flags, maxb, bytes)
    n = n + 1
    local f = assert(io.open(("%s/ws-%03d"):format(dir, n), "wb"))
    assert(f:write(string.char(flags, maxb, n & 0xff, 0), bytes))
    f:close()
  end
  local K = "\1\2\3\4"
  local open = "<open xmlns='" .. FRAMING .. "' to='x' version='1.0'/>"
  local session = frame(open, 1, K) .. frame("<message><body>hi</body></message>", 1, K) ..
    frame("<iq", 1, K, false) .. frame("", 9, K) .. frame(" type='get'/>", 0, K) ..
    frame("<a>" .. ("\195\169"):rep(100) .. "</a>", 1, K) .. frame(open, 1, K) ..
    frame("<close xmlns='" .. FRAMING .. "'/>", 1, K) .. frame("\3\232bye", 8, K)
  for chunk = 0, 7 do ws_seed(chunk << 1, 0, session) end
  ws_seed(0, 1, session)
  ws_seed(1, 0, (session:gsub(K, "")))                    -- not valid for a client: masked
  ws_seed(1, 0, frame(open) .. frame("<message/>") .. frame("", 10) .. frame("\3\232", 8))
  ws_seed(0, 4, frame("<a>" .. ("x"):rep(300) .. "</a>", 1, K))        -- over max_message
  ws_seed(0, 0, frame("<a>" .. ("x"):rep(70000) .. "</a>", 1, K))      -- 64-bit length
  ws_seed(0, 0, frame("<a/>", 2, K))                                   -- binary
  ws_seed(0, 0, frame("<a>\192\175</a>", 1, K))                        -- not UTF-8
  ws_seed(0, 0, frame(open, 1, K) .. frame("<a/><b/>", 1, K))          -- two elements
  ws_seed(0, 0, string.char(0xC1, 0x84) .. K .. "<a/>")                -- RSV1
  ws_seed(0, 0, string.char(0x81, 0xFE, 0, 4) .. K .. "<a/>")          -- non-minimal
  -- a redirect (RFC 7395 §3.6.1): <close/> with attributes, before <open/>
  ws_seed(1, 0, frame("<close xmlns='" .. FRAMING .. "' see-other-uri='wss://b.example/x?a=1&amp;b=2'/>") ..
    frame("\3\232", 8))
end
