-- lxmpp demo: the dictionary bot, on paper.
--
-- The classic first XMPP program is a dictionary bot: you send it a word,
-- it answers with the definition, or "don't know about X". lxmpp cannot
-- connect to a server yet (the client and the embedded server are coming),
-- so this demo plays the bot's side of the conversation from bytes:
--
--   1. the stream the server sends the bot, fed to lxmpp.stream_parser in
--      awkward pieces (the first part one byte at a time), as a network would;
--   2. each stanza as parsed, and the bot's answer built with lxmpp.stanza;
--   3. addresses prepared with lxmpp.jid;
--   4. hostile input refused with its RFC 6120 condition.
--
-- Run it with `make demo` (or: lua5.4 examples/demo.lua, with lxmpp on the path).

local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local jid = lxmpp.jid

local function section(title)
	print()
	print(("== %s "):format(title) .. ("="):rep(math.max(3, 72 - #title)))
	print()
end

local function indent(text, prefix)
	return prefix .. text:gsub("\n", "\n" .. prefix)
end

print("lxmpp " .. lxmpp.VERSION .. " demo: a dictionary bot, parsed and answered offline")

--- 1. The conversation on the wire ---------------------------------------------

local BOT = "dictbot@discovery.nasa.guv/home"
local USER = "davidbowman@discovery.nasa.guv/terminal"

local dictionary = {
	xmpp = "Extensible Messaging and Presence Protocol",
	lua = "a powerful, efficient, lightweight, embeddable scripting language",
	lxmpp = "an XMPP library for Lua 5.4 with a C core",
}

-- What the server sends the bot once it is logged in: the stream header,
-- a presence, three questions from the user, and the end of the stream.
-- (Whitespace between stanzas is allowed: servers send it as keepalives.)
local function chat(id, word)
	return ("<message from='%s' to='%s' type='chat' id='%s'><body>%s</body></message>\n")
		:format(USER, BOT, id, word)
end

local wire = table.concat {
	"<?xml version='1.0'?>",
	"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'",
	" from='discovery.nasa.guv' to='", BOT, "' id='s1' version='1.0' xml:lang='en'>\n",
	"<presence from='", USER, "' to='", BOT, "'><show>chat</show><status>Open the pod bay doors</status></presence>\n",
	chat("q1", "xmpp"),
	chat("q2", "lua"),
	chat("q3", "HAL 9000 &amp; friends"),
	"</stream:stream>",
}

section("1. The stream the bot receives (" .. #wire .. " bytes)")
print(wire)

--- 2. Parsing it, and answering -----------------------------------------------

-- The bot's answer to a message: the reply (to and from swapped, same id and
-- type) with a body from the dictionary.
local function answer(msg)
	local word = msg:get_child_text("body")
	local definition = dictionary[word:lower()]
	local text = definition and (word .. ": " .. definition) or ("don't know about " .. word)
	return st.reply(msg):body(text)
end

local replies = {}
local parser = lxmpp.stream_parser {
	stream_open = function (attr)
		print(("stream opened by %s (id %s, version %s)"):format(attr.from, attr.id, attr.version))
	end,
	stanza = function (stanza)
		print()
		print(("received <%s/>:"):format(stanza.name))
		print(indent(stanza:pretty(), "    "))
		if stanza.name == "message" and stanza.attr.type == "chat" then
			local reply = answer(stanza)
			replies[#replies + 1] = reply
			print("  the bot answers (serialized, as sent on the wire):")
			print("    " .. tostring(reply))
		elseif stanza.name == "presence" then
			print(("  %s is available: %q"):format(jid.bare(stanza.attr.from), stanza:get_child_text("status")))
		end
	end,
	stream_close = function ()
		print()
		print("stream closed by the server")
	end,
}

-- A network cuts bytes anywhere: the first 150 arrive one at a time (the
-- header is split inside its attribute values), the rest in 7, 13, 29 and
-- 61-byte pieces. Stanzas come out whole, as soon as their last '>' arrives.
section("2. Feeding it to lxmpp.stream_parser in awkward pieces")
local pos, pieces = 1, 0
local sizes = { 7, 13, 29, 61 }
while pos <= #wire do
	local n = pos <= 150 and 1 or sizes[pieces % #sizes + 1]
	local ok, message, condition = parser:feed(wire:sub(pos, pos + n - 1))
	assert(ok, message and (condition .. ": " .. message))
	pos, pieces = pos + n, pieces + 1
end
print()
print(("%d bytes fed in %d pieces; the bot sent %d replies"):format(#wire, pieces, #replies))
assert(#replies == 3)
assert(replies[1]:get_child_text("body") == "xmpp: Extensible Messaging and Presence Protocol")
assert(replies[3]:get_child_text("body") == "don't know about HAL 9000 & friends")

-- Building a stanza from scratch: the bot's "ready" greeting, with the
-- chainable builder (tag descends, up climbs back).
print()
print("the bot's greeting, built with the chainable builder:")
local greeting = st.message({ to = jid.bare(USER), type = "chat", id = "hello1" }, "DictBot ready")
	:tag("active", { xmlns = "http://jabber.org/protocol/chatstates" }):up()
print(indent(greeting:pretty(), "    "))
print("  on the wire: " .. tostring(greeting))

--- 3. Addresses ----------------------------------------------------------------

section("3. Addresses: lxmpp.jid")
local function show_prep(s)
	local prepped, err = jid.prep(s)
	local call = ("jid.prep(%q)"):format(s)
	local result = prepped and ("%q"):format(prepped) or ("nil, %q"):format(err)
	print("  " .. call .. (" "):rep(52 - utf8.len(call)) .. " -> " .. result)
end
show_prep("DavidBowman@Discovery.NASA.guv/terminal") -- node and domain are case-folded
show_prep("DavidBowman@discovery.nasa.guv/EVA pod 1") -- the resource keeps its case
show_prep("dictbot@xn--bcher-kva.example") -- A-labels become Unicode
show_prep("dictbot@Bücher.example.") -- so does the trailing root dot go
show_prep("@discovery.nasa.guv") -- empty localpart
show_prep("hal@9000") -- numeric top-level label
print()
local node, domain, resource = jid.split(USER)
print(("  jid.split(%q) -> %q, %q, %q"):format(USER, node, domain, resource))
print(("  jid.bare(%q) -> %q"):format(USER, jid.bare(USER)))
print(("  jid.equal(%q, %q) -> %s"):format("DavidBowman@Discovery.nasa.guv",
	"davidbowman@discovery.nasa.guv", jid.equal("DavidBowman@Discovery.nasa.guv", "davidbowman@discovery.nasa.guv")))

--- 4. Hostile input -----------------------------------------------------------

section("4. Hostile input is refused with its RFC 6120 condition")
local HEADER = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

local function refuse(what, bytes, opts)
	local p = lxmpp.stream_parser({ stanza = function () error("must not be delivered") end }, opts)
	local ok, message, condition = p:feed(bytes)
	assert(not ok, what .. " was accepted")
	print(("  %-36s -> %s (%s)"):format(what, condition, message))
	return condition
end

-- "Billion laughs": ten nested entities expand to a billion "lol"s. XMPP
-- forbids DTDs altogether (RFC 6120 section 11.1), so nothing is expanded.
local laughs = { "<?xml version='1.0'?>\n<!DOCTYPE lolz [\n <!ENTITY lol 'lol'>\n" }
for i = 1, 9 do
	laughs[#laughs + 1] = (" <!ENTITY lol%d '%s'>\n"):format(i, (i == 1 and "&lol;" or ("&lol" .. (i - 1) .. ";")):rep(10))
end
laughs[#laughs + 1] = "]>\n<lolz>&lol9;</lolz>"
print(indent(table.concat(laughs):sub(1, 160) .. " ...", "    "))
print()
assert(refuse("a billion laughs (DTD)", table.concat(laughs)) == "restricted-xml")
assert(refuse("a comment inside the stream", HEADER .. "<message><!-- hi --></message>") == "restricted-xml")
assert(refuse("a 10 kB body, limit 4 kB", HEADER .. chat("big", ("A"):rep(10000)),
	{ max_stanza_size = 4096 }) == "policy-violation")
assert(refuse("elements nested 100 deep", HEADER .. ("<x>"):rep(100)) == "policy-violation")
assert(refuse("a stream in another encoding",
	"<?xml version='1.0' encoding='ISO-8859-1'?>" .. HEADER) == "unsupported-encoding")
assert(refuse("a mismatched end tag", HEADER .. "<message></presence>") == "not-well-formed")

-- Building is checked too: no string can make the serializer write bad XML.
local ok, err = pcall(st.message, { to = USER }, "bell \7 character")
assert(not ok)
print()
print([[  st.message({ to = USER }, "bell \7 character") raises:]])
print("    " .. tostring(err):gsub("^.-:%d+: ", ""))

print()
print("demo finished: see README.md and docs/api.md for what else is there")
