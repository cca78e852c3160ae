-- The embedded server with the command-line senders people already run:
-- Debian's go-sendxmpp (go-xmpp inside) and sendxmpp (Perl, Net::XMPP),
-- each with its defaults (STARTTLS, the mechanism it picks; how they are
-- run: spec/support/senders.lua). The message must reach a recipient
-- connected with lxmpp.
--
-- go-xmpp writes "</auth>\n" and then the restarted stream's
-- "<?xml version='1.0'?>": the server must take the whitespace before the
-- new header (csrc/stream.c skip_space). A missing program fails, never
-- skips.
local senders = require "spec.support.senders"
local serve = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local USERS = { alice = "alice-pw", bob = "bob-pw" }

-- bob is online (available) with lxmpp; send(port, body) runs the program;
-- the message must arrive from alice with that body.
local function delivers(send)
  serve.run_logged({ users = USERS }, function(_, port, log)
    local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
    assert(bob:send_presence())           -- available: a message to the bare JID comes here
    local body = "hello from the command line " .. math.random(1e6)
    local got = serve.collect(bob, "message")
    local r = send(port, body)
    serve.until_true(function() return #got > 0 end, 5)
    local m = got[1]
    assert.truthy(m, "the message did not arrive\n" .. r.text .. "\nserver log:\n" .. table.concat(log, "\n"))
    assert.equal(body, m:get_child_text("body"))
    assert.equal(0, r.code, r.text)
    assert.equal("alice@example.test", (m.attr.from:match("^[^/]+")))
    assert.is_nil(serve.logged(log, "not%-well%-formed"), table.concat(log, "\n"))
    bob:close()
  end)
end

describe("embedded server with command-line senders", function()
  after_each(assert_clean)

  it("takes a message from go-sendxmpp (go-xmpp: whitespace before the restarted stream)", function()
    delivers(function(port, body)
      return senders.go_sendxmpp(port, "alice@example.test", USERS.alice, "bob@example.test", body)
    end)
  end)

  it("takes a message from sendxmpp (Net::XMPP)", function()
    delivers(function(port, body)
      return senders.sendxmpp(port, "alice@example.test", USERS.alice, "bob@example.test", body)
    end)
  end)
end)
