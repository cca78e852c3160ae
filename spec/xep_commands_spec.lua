-- XEP-0050 ad-hoc commands between two lxmpp clients on the embedded
-- server: a bot offers a two-stage command; a permitted user lists and runs
-- it, steps back, completes or cancels; strangers neither see nor run it,
-- nor hijack a session; bad actions and bad submissions are refused.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local forms = require "lxmpp.forms"
local serve = require "spec.support.serve"
local commands = require "lxmpp.plugins.commands"

local USERS = { alice = "alice-pw", bob = "bob-pw", mallory = "mallory-pw" }
local NODE = "urn:example:greet"

local STAGE1 = forms.new{
  title = "Greeting",
  { var = "name", type = "text-single", label = "Whom to greet", required = true },
}
local STAGE2 = forms.new{
  { var = "style", type = "list-single", options = { "plain", "loud" }, value = "plain" },
}

-- the bot's command: two stages, prev goes back to the first
local function greet(cmd)
  local stage, values = 1, {}
  while true do
    if stage == 1 then
      local v, action = cmd:ask(STAGE1, { actions = { "next" } })
      if not v then return end
      values.name, stage = v.name, 2
      assert(action == "next")
    else
      local v, action = cmd:ask(STAGE2, { actions = { "prev", "complete" }, default = "complete",
        notes = "Pick a style" })
      if not v then return end
      if action == "prev" then
        stage = 1
      else
        local text = "Hello, " .. values.name
        if v.style == "loud" then text = text:upper() .. "!" end
        return { note = text, form = forms.new{ { var = "greeting" } }:form({ greeting = text }, "result") }
      end
    end
  end
end

local function setup(port)
  local bot = assert(serve.login(port, "alice", "alice-pw", "bot"))
  local bob = assert(serve.login(port, "bob", "bob-pw"))
  local mallory = assert(serve.login(port, "mallory", "mallory-pw"))
  bot:add_command(NODE, "Greet someone", greet, { allowed = { "bob@example.test" } })
  bot:add_command("urn:example:admin", "Admin only", function() return "ok" end)
  return bot, bob, mallory
end

describe("ad-hoc commands", function()
  it("lists to each requester only the commands it may run", function()
    serve.run({ users = USERS }, function(_, port)
      local bot, bob, mallory = setup(port)
      assert.same({ { jid = bot.jid, node = NODE, name = "Greet someone" } }, assert(bob:commands(bot.jid)))
      assert.same({}, assert(mallory:commands(bot.jid)))
      local bot2 = assert(serve.login(port, "alice", "alice-pw", "phone"))
      local own = assert(bot2:commands(bot.jid))
      assert.equal(1, #own)
      assert.equal("urn:example:admin", own[1].node)   -- the account itself, by default
      local info = assert(bob:disco_info(bot.jid, NODE))
      assert.equal("command-node", info.identities[1].type)
      assert.is_true(info.features[commands.NS_COMMANDS])
      assert.is_nil(mallory:disco_info(bot.jid, NODE))
      local r, _, cond = mallory:execute(bot.jid, NODE)
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      r, _, cond = bob:execute(bot.jid, "urn:example:none")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      for _, c in ipairs({ bot, bot2, bob, mallory }) do c:close() end
    end)
  end)

  it("runs a two-stage form with next, prev and complete", function()
    serve.run({ users = USERS }, function(_, port)
      local bot, bob, mallory = setup(port)
      local r = assert(bob:execute(bot.jid, NODE))
      assert.equal("executing", r.status)
      assert.equal("Greeting", r.form.title)
      assert.same({ next = true }, r.actions)
      local sid = r.sessionid
      assert.is_string(sid)
      r = assert(r:next({ name = "Juliet" }))
      assert.equal(sid, r.sessionid)
      assert.same({ prev = true, complete = true }, r.actions)
      assert.equal("complete", r.default)
      assert.same({ { type = "info", text = "Pick a style" } }, r.notes)
      r = assert(r:prev())
      assert.equal("Greeting", r.form.title)
      r = assert(r:next({ name = "Romeo" }))
      r = assert(r:complete({ style = "loud" }))
      assert.equal("completed", r.status)
      assert.same({ { type = "info", text = "HELLO, ROMEO!" } }, r.notes)
      assert.equal("HELLO, ROMEO!", r.form.values.greeting)
      assert.has_error(function() r:next() end)
      assert.same({}, bot.commands.sessions)
      for _, c in ipairs({ bot, bob, mallory }) do c:close() end
    end)
  end)

  it("refuses actions not offered, bad submissions, strangers' steps; cancels", function()
    serve.run({ users = USERS }, function(_, port)
      local bot, bob, mallory = setup(port)
      local r = assert(bob:execute(bot.jid, NODE))
      -- complete is not offered at the first stage
      local bad, _, cond, e = r:complete({ name = "x" })
      assert.is_nil(bad)
      assert.equal("bad-request", cond)
      assert.truthy(e:get_child("error"):get_child("bad-action", commands.NS_COMMANDS))
      r = assert(r:next({ name = "Juliet" }))
      -- a value outside the options: refused with the reason, the stage stays
      bad, _, cond = r:complete({ style = "reckless" })
      assert.is_nil(bad)
      assert.equal("bad-request", cond)
      -- mallory tries bob's session
      local iq = st.iq({ type = "set", to = bot.jid }):tag("command", { xmlns = commands.NS_COMMANDS,
        node = NODE, sessionid = r.sessionid, action = "complete" })
      bad, _, cond, e = mallory:request(iq)
      assert.is_nil(bad)
      assert.equal("bad-request", cond)
      assert.truthy(e:get_child("error"):get_child("bad-sessionid", commands.NS_COMMANDS))
      -- bob carries on, then cancels
      local c = assert(r:cancel())
      assert.equal("canceled", c.status)
      bad, _, cond, e = r:complete({ style = "plain" })
      assert.is_nil(bad)
      assert.equal("bad-request", cond)
      assert.truthy(e:get_child("error"):get_child("bad-sessionid", commands.NS_COMMANDS))
      assert.is_true(serve.until_true(function() return next(bot.commands.sessions) == nil end))
      for _, cl in ipairs({ bot, bob, mallory }) do cl:close() end
    end)
  end)

  it("reads a submission to a stage given as an <x/> with that form's field types", function()
    serve.run({ users = USERS }, function(_, port)
      local bot, bob, mallory = setup(port)
      local seen
      bot:add_command("urn:example:raw", "Raw form", function(cmd)
        local x = st.stanza("x", { xmlns = forms.xmlns, type = "form" })
          :tag("field", { var = "rooms", type = "jid-multi" }):up()
          :tag("field", { var = "loud", type = "boolean" }):up()
        local v = cmd:ask(x, { actions = { "complete" } })
        seen = v
        return "ok"
      end, { allowed = true })
      -- a client that submits without types (XEP-0004 §3.3 allows it)
      local function submit(sid, fields)
        local iq = st.iq({ type = "set", to = bot.jid }):tag("command", { xmlns = commands.NS_COMMANDS,
          node = "urn:example:raw", sessionid = sid, action = "complete" })
          :tag("x", { xmlns = forms.xmlns, type = "submit" })
        for var, values in pairs(fields) do
          iq:tag("field", { var = var })
          for _, v in ipairs(values) do iq:text_tag("value", v) end
          iq:up()
        end
        return bob:request(iq)
      end
      local r = assert(bob:execute(bot.jid, "urn:example:raw"))
      -- a value that does not fit the stage's type: refused, the stage waits
      local bad, _, cond = submit(r.sessionid, { rooms = { "a@b", "not@@valid" } })
      assert.is_nil(bad)
      assert.equal("bad-request", cond)
      assert.is_nil(seen)
      assert(submit(r.sessionid, { rooms = { "Lobby@Conference.Example.ORG", "b@example.org" }, loud = { "1" } }))
      assert.is_true(serve.until_true(function() return seen ~= nil end))
      assert.same({ "lobby@conference.example.org", "b@example.org" }, seen.rooms)
      assert.is_true(seen.loud)
      for _, c in ipairs({ bot, bob, mallory }) do c:close() end
    end)
  end)

  it("returns not-acceptable, sending nothing, when values do not fit the types the peer's form declares", function()
    serve.run({ users = USERS }, function(_, port)
      local bot, bob, mallory = setup(port)
      local steps = 0
      bot:add_command("urn:example:typed", "Typed form", function(cmd)
        -- the peer declares "count" a boolean and "rooms" a jid-multi
        local x = st.stanza("x", { xmlns = forms.xmlns, type = "form" })
          :tag("field", { var = "count", type = "boolean" }):up()
          :tag("field", { var = "rooms", type = "jid-multi" }):up()
        while true do
          local v = cmd:ask(x, { actions = { "next", "complete" } })
          if not v then return end
          steps = steps + 1
          if v.count == true then return "counted" end
        end
      end, { allowed = true })
      local r = assert(bob:execute(bot.jid, "urn:example:typed"))
      for _, values in ipairs({ { count = "10" }, { count = 10 }, { rooms = "a@b" } }) do
        local bad, msg, cond = r:next(values)
        assert.is_nil(bad)
        assert.equal("not-acceptable", cond)
        assert.matches("^the values do not fit the command's form: value of %a+[%-%a]* field '%a+' must be", msg)
      end
      lxmpp.sleep(0.1)
      assert.equal(0, steps)                         -- nothing was sent
      assert.equal("executing", r.status)
      local done = assert(r:complete({ count = true, rooms = { "a@b" } }))
      assert.equal("completed", done.status)
      assert.equal(1, steps)
      -- the caller's own misuse still raises
      r = assert(bob:execute(bot.jid, "urn:example:typed"))
      assert.has_error(function() r:next("count") end, "command: values must be a table")
      assert.equal("canceled", assert(r:cancel()).status)
      for _, c in ipairs({ bot, bob, mallory }) do c:close() end
    end)
  end)

  it("answers internal-server-error when a handler fails, and ends idle sessions", function()
    serve.run({ users = USERS }, function(_, port)
      local bot, bob, mallory = setup(port)
      local logged = {}
      bot.logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end
      bot:add_command("urn:example:broken", "Broken", function() error("boom") end, { allowed = true })
      local r, _, cond = bob:execute(bot.jid, "urn:example:broken")
      assert.is_nil(r)
      assert.equal("internal-server-error", cond)
      assert.matches("boom", table.concat(logged, "\n"))
      local finished = false
      bot:add_command("urn:example:slow", "Slow", function(cmd)
        local v, why = cmd:ask(STAGE1)
        finished = why
        return v and "done"
      end, { allowed = true, timeout = 0.3 })
      r = assert(mallory:execute(bot.jid, "urn:example:slow"))
      assert.is_true(serve.until_true(function() return finished end, 3))
      assert.equal("timeout", finished)
      local late, _, lcond = r:next({ name = "x" })
      assert.is_nil(late)
      assert.equal("bad-request", lcond)
      for _, c in ipairs({ bot, bob, mallory }) do c:close() end
    end)
  end)
end)
