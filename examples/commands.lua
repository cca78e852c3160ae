-- A bot offering XEP-0050 ad-hoc commands: "remind" asks in two stages
-- (what and when, then a confirmation it can step back from) and sends the
-- reminder when it is due; "quit" stops the bot. Only LXMPP_OWNER may run
-- them (any client with ad-hoc commands: Gajim, Psi, Conversations, ...).
--
--   LXMPP_OWNER=you@example.org lua5.4 examples/commands.lua bot@example.org secret [HOST [PORT]]

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local forms = require "lxmpp.forms"
local common = require "common"

local opts = common.options(arg)
local owner = common.need_env("LXMPP_OWNER", "the JID allowed to run the commands")

local WHAT = forms.new{
  title = "New reminder",
  instructions = "What should I remind you of, and when?",
  { var = "text", type = "text-single", label = "Remind me of", required = true },
  { var = "delay", type = "list-single", label = "When", value = "60", options = {
    { label = "right now", value = "0" }, { label = "in a minute", value = "60" },
    { label = "in an hour", value = "3600" } } },
}

local function confirm_form(values)
  return forms.new{
    title = "Confirm",
    { type = "fixed", value = ("Remind you of \"%s\" %s?"):format(values.text,
      values.delay == "0" and "right now" or ("in " .. values.delay .. " seconds")) },
    { var = "confirm", type = "boolean", label = "Yes, set it", value = true },
  }
end

lxmpp.run(function()
  local c = common.connect(opts)
  common.say("online as %s", c.jid)
  c:send_presence()

  -- two stages: next from the first, prev or complete from the second
  c:add_command("remind", "Set a reminder", function(cmd)
    while true do
      local what = cmd:ask(WHAT, { actions = { "next" } })
      if not what then return end                    -- canceled, or nobody answered
      if (what.text or "") == "" then return { notes = { { type = "error", text = "Nothing to remind of." } } } end
      local values = what
      local confirm = confirm_form(values)
      local answer, action = cmd:ask(confirm, { actions = { "prev", "complete" } })
      if not answer then return end
      if action == "complete" then
        if not answer.confirm then return "No reminder set." end
        local who, delay = cmd.from, tonumber(values.delay)
        lxmpp.spawn(function()
          lxmpp.sleep(delay)
          c:send_message(who, "Reminder: " .. values.text)
        end)
        common.say("reminder for %s in %d s", who, delay)
        return "Reminder set."
      end
      -- prev: back to the first stage
    end
  end, { allowed = { owner } })

  c:add_command("quit", "Stop the bot", function(cmd)
    common.say("quit requested by %s", cmd.from)
    lxmpp.spawn(function()
      lxmpp.sleep(0.2)
      c:close()
    end)
    return "Bye."
  end, { allowed = { owner } })
end)
