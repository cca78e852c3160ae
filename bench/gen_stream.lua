-- bench/gen_stream.lua: a deterministic, realistic server-to-client XMPP stream.
--
--   local gen = require "gen_stream"      -- or dofile("bench/gen_stream.lua")
--   local xml, counts = gen(100000, 42)   -- n stanzas, seed
--
-- The result is the stream header, n top-level stanzas, and </stream:stream>.
-- `counts` maps a kind ("chat", "chatstate", "receipt", "presence",
-- "unavailable", "groupchat", "subject", "roster", "ping") to how many were
-- produced.
--
-- The mix is what a client typically receives on a busy account:
--   ~36% one-to-one chat: body + XEP-0085 chat state, sometimes a XEP-0184
--        receipt request, XEP-0359 stanza-id/origin-id, XEP-0334 hints; plus
--        bodyless chat-state notifications and receipts
--   ~30% presence: XEP-0115 caps, show/status/priority, vcard-temp:x:update,
--        MUC occupant presence, some type='unavailable'
--   ~29% MUC groupchat: XEP-0203 delay stamps (history), stanza-id,
--        occasional <subject/>
--    ~2% roster results (jabber:iq:roster, 5-20 items with groups)
--    ~3% XEP-0199 pings
-- Bodies contain non-ASCII UTF-8 and escaped entities (&amp; &lt; &gt; &quot;).
-- Randomness comes from a fixed 32-bit LCG, never math.random, so the same
-- (n, seed) gives byte-identical output on every machine and Lua build.

local concat, floor, format = table.concat, math.floor, string.format

-- Whole numbers only: the same arithmetic on 5.4's integers and on LuaJIT's
-- doubles (exact below 2^53), so every Lua generates the same bytes.
local function whole(x)
  return type(x) == "number" and x == floor(x) and x >= -2 ^ 53 and x <= 2 ^ 53
end

local function gen(n, seed)
  assert(whole(n), "gen(n, seed): n must be an integer")
  local state = (whole(seed) and seed or 1) % 4294967296   -- (x & 0xffffffff, also for x < 0)

  -- Numerical Recipes LCG, mod 2^32; products stay below 2^53.
  local function rnd(m) -- integer in [1, m]
    state = (state * 1664525 + 1013904223) % 4294967296
    return (floor(state / 256) % m) + 1                      -- (state >> 8)
  end
  local function pick(t) return t[rnd(#t)] end
  local function chance(percent) return rnd(100) <= percent end

  local alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  local b64 = alnum .. "+/"
  local function rstr(len, alphabet)
    alphabet = alphabet or alnum
    local t, m = {}, #alphabet
    for i = 1, len do
      local k = rnd(m)
      t[i] = alphabet:sub(k, k)
    end
    return concat(t)
  end
  local function uuid()
    local h = "0123456789abcdef"
    return rstr(8, h) .. "-" .. rstr(4, h) .. "-4" .. rstr(3, h) .. "-a" .. rstr(3, h) .. "-" .. rstr(12, h)
  end

  local me_bare = "romeo@montague.example"
  local me = me_bare .. "/orchard-" .. rstr(4)
  local server = "montague.example"

  local users = {}
  local first = { "juliet", "mercutio", "benvolio", "tybalt", "nurse", "laurence", "paris",
    "rosaline", "balthasar", "sampson", "gregory", "abram", "peter", "escalus", "capulet",
    "montague", "lady.capulet", "friar.john", "apothecary", "chorus", "zoë", "jörg", "ana-maría" }
  local domains = { "capulet.example", "verona.example", "jabber.example.org", "chat.example.net",
    "xmpp.example.com", "montague.example" }
  for i = 1, 60 do
    users[i] = pick(first) .. (i > #first and tostring(i) or "") .. "@" .. pick(domains)
  end
  local resources = { "balcony", "Conversations.x7Qp", "gajim.4F2A9B1C", "dino.8c1e2f3a",
    "Monal-iOS.3d2f", "phone", "laptop", "profanity", "Psi+", "Cheogram.Ux8e" }

  local clients = {}
  for i, node in ipairs({ "http://conversations.im", "https://gajim.org", "https://dino.im",
      "http://monal-im.org", "https://profanity-im.github.io", "https://psi-plus.com",
      "https://cheogram.com" }) do
    clients[i] = { node = node, ver = rstr(27, b64) .. "=" }
  end

  local rooms = { "verona@conference.capulet.example", "xsf@muc.xmpp.example.org",
    "prosody@conference.prosody.example", "lua@rooms.example.net",
    "café-société@chat.example.fr" }
  local nicks = { "Juliet", "Mercutio", "Benvolio", "Tybalt", "Nurse", "Friar Laurence",
    "Ζωή", "Jörg", "Ана", "小明", "d&apos;Artagnan", "Ali &amp; Co", "Zed" }

  local words = {
    "the", "a", "to", "and", "of", "is", "in", "it", "you", "that", "for", "on", "with",
    "this", "was", "I", "are", "be", "have", "not", "at", "but", "we", "can", "what",
    "so", "if", "just", "about", "there", "out", "up", "do", "my", "will", "know",
    "meeting", "tomorrow", "server", "release", "patch", "stanza", "roster", "message",
    "really", "think", "should", "works", "broken", "again", "lunch", "coffee", "tonight",
    "ok", "yes", "no", "thanks!", "haha", "lol", ":)", ";-)", "?", "...",
    "&amp;", "&lt;3", "a&amp;b", "x &lt; y", "&gt;", "&quot;quoted&quot;", "it's",
    "café", "naïve", "Zürich", "façade", "über", "niño", "Größe", "déjà vu",
    "日本語", "こんにちは", "你好", "Привет", "спасибо", "Ελληνικά", "مرحبا", "שלום",
    "🙂", "👍", "🎉", "€5", "½", "→", "https://example.org/some/path?x=1&amp;y=2",
  }
  local function text(minw, maxw)
    local t, k = {}, minw + rnd(maxw - minw + 1) - 1
    for i = 1, k do t[i] = pick(words) end
    if k > 6 and chance(15) then t[floor(k / 2)] = t[floor(k / 2)] .. "\n" end
    return concat(t, " ")
  end
  local statuses = { "Available", "At work", "In a meeting until 3pm", "On the train 🚆",
    "Zzz…", "Back later &amp; maybe tomorrow", "Deutsch? Gerne — äöü", "" }
  local shows = { "away", "chat", "dnd", "xa" }
  local groups = { "Friends", "Family", "Work", "Verona", "Montague &amp; Capulet", "Ünïcødé",
    "Buddies", "Club", "Café" }
  local subs = { "both", "both", "both", "to", "from", "none" }

  local clock = 1709251200 -- 2024-03-01T00:00:00Z
  local function stamp()
    clock = clock + rnd(90)
    if chance(30) then
      return os.date("!%Y-%m-%dT%H:%M:%S", clock) .. format(".%03dZ", rnd(1000) - 1)
    end
    return os.date("!%Y-%m-%dT%H:%M:%SZ", clock)
  end
  local function full(bare) return bare .. "/" .. pick(resources) end

  local counts = {}
  local function count(kind) counts[kind] = (counts[kind] or 0) + 1 end

  local out = {
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    .. " from='" .. server .. "' to='" .. me_bare .. "' id='" .. uuid()
    .. "' version='1.0' xml:lang='en'>",
  }
  local o = #out
  local function emit(s) o = o + 1; out[o] = s end

  local function chat()
    local from = full(pick(users))
    local id = rstr(12)
    local r = rnd(100)
    if r <= 22 then -- bodyless chat-state notification
      count("chatstate")
      emit(format("<message from='%s' to='%s' type='chat' id='%s'>"
        .. "<%s xmlns='http://jabber.org/protocol/chatstates'/>%s</message>",
        from, me, id, pick({ "composing", "composing", "paused", "active", "inactive", "gone" }),
        chance(60) and "<no-store xmlns='urn:xmpp:hints'/>" or ""))
      return
    elseif r <= 30 then -- delivery receipt
      count("receipt")
      emit(format("<message from='%s' to='%s' id='%s'>"
        .. "<received xmlns='urn:xmpp:receipts' id='%s'/><store xmlns='urn:xmpp:hints'/></message>",
        from, me, id, rstr(12)))
      return
    end
    count("chat")
    local p = { format("<message from='%s' to='%s' type='chat' id='%s'><body>%s</body>"
      .. "<active xmlns='http://jabber.org/protocol/chatstates'/>",
      from, me, id, text(1, 30)) }
    if chance(45) then p[#p + 1] = "<request xmlns='urn:xmpp:receipts'/>" end
    if chance(25) then p[#p + 1] = "<markable xmlns='urn:xmpp:chat-markers:0'/>" end
    if chance(55) then
      p[#p + 1] = format("<origin-id xmlns='urn:xmpp:sid:0' id='%s'/>"
        .. "<stanza-id xmlns='urn:xmpp:sid:0' id='%s' by='%s'/>",
        uuid(), uuid(), me_bare)
    end
    p[#p + 1] = "</message>"
    emit(concat(p))
  end

  local function presence()
    local from = full(pick(users))
    if chance(12) then
      count("unavailable")
      emit(format("<presence from='%s' to='%s' type='unavailable'%s</presence>", from, me,
        chance(30) and "><status>Logged out</status>" or ">"))
      return
    end
    count("presence")
    local cl = pick(clients)
    local p = { format("<presence from='%s' to='%s'%s>", from, me,
      chance(40) and format(" id='%s'", rstr(10)) or "") }
    if chance(45) then p[#p + 1] = "<show>" .. pick(shows) .. "</show>" end
    if chance(40) then
      local s = pick(statuses)
      p[#p + 1] = s == "" and "<status/>" or "<status>" .. s .. "</status>"
    end
    p[#p + 1] = format("<priority>%d</priority>", rnd(51) - 1)
    p[#p + 1] = format("<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='%s' ver='%s'/>", cl.node, cl.ver)
    if chance(50) then
      p[#p + 1] = format("<x xmlns='vcard-temp:x:update'><photo>%s</photo></x>", rstr(40, "0123456789abcdef"))
    end
    if chance(20) then -- MUC occupant presence
      p[1] = format("<presence from='%s/%s' to='%s'>", pick(rooms), pick(nicks), me)
      p[#p + 1] = format("<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='%s' role='%s'/></x>",
        pick({ "none", "member", "member", "admin", "owner" }),
        pick({ "participant", "participant", "moderator", "visitor" }))
    end
    p[#p + 1] = "</presence>"
    emit(concat(p))
  end

  local function groupchat()
    local room = pick(rooms)
    local from = room .. "/" .. pick(nicks)
    local id = uuid()
    if chance(3) then
      count("subject")
      emit(format("<message from='%s' to='%s' type='groupchat' id='%s'><subject>%s</subject>"
        .. "<delay xmlns='urn:xmpp:delay' stamp='%s' from='%s'/></message>",
        from, me, id, text(3, 15), stamp(), room))
      return
    end
    count("groupchat")
    local p = { format("<message from='%s' to='%s' type='groupchat' id='%s'><body>%s</body>",
      from, me, id, text(1, 40)) }
    if chance(65) then
      p[#p + 1] = format("<delay xmlns='urn:xmpp:delay' stamp='%s' from='%s'/>", stamp(), room)
    end
    if chance(40) then p[#p + 1] = "<active xmlns='http://jabber.org/protocol/chatstates'/>" end
    p[#p + 1] = format("<stanza-id xmlns='urn:xmpp:sid:0' id='%s' by='%s'/>", uuid(), room)
    if chance(30) then
      p[#p + 1] = format("<occupant-id xmlns='urn:xmpp:occupant-id:0' id='%s'/>", rstr(43, b64) .. "=")
    end
    p[#p + 1] = "</message>"
    emit(concat(p))
  end

  local roster_ver = 0
  local function roster()
    count("roster")
    roster_ver = roster_ver + 1
    local p = { format("<iq type='result' id='%s' to='%s'><query xmlns='jabber:iq:roster' ver='ver%d'>",
      rstr(16), me, roster_ver) }
    for _ = 1, 4 + rnd(16) do
      local u = pick(users)
      local item = { format("<item jid='%s' subscription='%s'", u, pick(subs)) }
      if chance(80) then item[#item + 1] = format(" name='%s'", pick(nicks)) end
      if chance(10) then item[#item + 1] = " ask='subscribe'" end
      local ng = rnd(3) - 1
      if ng == 0 then
        item[#item + 1] = "/>"
      else
        item[#item + 1] = ">"
        for _ = 1, ng do item[#item + 1] = "<group>" .. pick(groups) .. "</group>" end
        item[#item + 1] = "</item>"
      end
      p[#p + 1] = concat(item)
    end
    p[#p + 1] = "</query></iq>"
    emit(concat(p))
  end

  local function ping()
    count("ping")
    emit(format("<iq from='%s' to='%s' id='%s' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
      server, me, rstr(8)))
  end

  for _ = 1, n do
    local r = rnd(100)
    if r <= 36 then chat()
    elseif r <= 66 then presence()
    elseif r <= 95 then groupchat()
    elseif r <= 97 then roster()
    else ping() end
    if rnd(500) == 1 then emit(" ") end -- the odd whitespace keepalive between stanzas
  end
  emit("</stream:stream>")
  return concat(out), counts
end

return gen
