-- The classic first XMPP program: a dictionary bot. Send it a word, it
-- answers the definition; "don't know about X" otherwise. (The article this
-- project started from built it with xmpp4r; here it is with lxmpp.)
--
--   lua5.4 examples/dictbot.lua bot@example.org secret
--
-- It stays online until it gets "quit" from LXMPP_OWNER (a bare JID), or
-- Ctrl-C.

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local common = require "common"

local DICTIONARY = {
  xmpp = "the Extensible Messaging and Presence Protocol (RFC 6120): XML streams for chat and presence",
  jabber = "the original name of XMPP, created by Jeremie Miller in 1998",
  jid = "a Jabber ID, an XMPP address: node@domain/resource (RFC 7622)",
  stanza = "a unit of XMPP: <message/>, <presence/> or <iq/>",
  presence = "whether an entity is online and available, broadcast to its subscribers",
  roster = "an XMPP contact list, kept by the server",
  gateway = "a component that translates XMPP to another network, such as SMS or IRC",
  lua = "a small, fast, embeddable scripting language from PUC-Rio",
}

local opts = common.options(arg)
-- What was sent while the bot was away reaches it as "message" events, as
-- offline messages (RFC 6121 §8.5.2.1.1) or, after a Bind2 login, from
-- the archive (the client's catch-up, docs/api.md): nothing to set.
local owner = os.getenv("LXMPP_OWNER")

lxmpp.run(function()
  local c = common.connect(opts)
  common.say("online as %s", c.jid)
  c:send_presence({ status = "send me a word" })

  c:on("message", function(m)
    local body = m:get_child_text("body")
    if not body or m.attr.type == "error" or m.attr.type == "groupchat" then return end
    local from = m.attr.from
    if body == "quit" and owner and lxmpp.jid.equal(lxmpp.jid.bare(from), owner) then
      common.say("quit requested by %s", from)
      c:close()
      lxmpp.stop()
      return
    end
    local word = body:lower():match("^%s*(.-)%s*$")
    local definition = DICTIONARY[word]
    local answer = definition and (word .. ": " .. definition) or ("don't know about " .. word)
    common.say("%s asked %q", from, word)
    c:send_message(from, answer, m.attr.type == "normal" and "normal" or "chat")
  end)
end)
