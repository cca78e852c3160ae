-- lxmpp.forms: XEP-0004 data forms built from typed Lua values and read back.

local st = require "lxmpp.stanza"
local forms = require "lxmpp.forms"

local function layout()
  return forms.new{
    title = "Settings", instructions = "Fill in",
    { var = "FORM_TYPE", type = "hidden", value = "urn:example:settings" },
    { var = "name", type = "text-single", label = "Name", required = true, desc = "Your name" },
    { var = "secret", type = "text-private" },
    { var = "notes", type = "text-multi" },
    { var = "on", type = "boolean", value = true },
    { var = "colour", type = "list-single", options = { "red", { label = "Blue", value = "blue" } } },
    { var = "tags", type = "list-multi", options = { "a", "b", "c" } },
    { var = "owner", type = "jid-single" },
    { var = "admins", type = "jid-multi" },
    { type = "fixed", value = "A section" },
  }
end

local function x(fields, form_type)
  return assert(st.parse("<x xmlns='jabber:x:data' type='" .. (form_type or "submit") .. "'>" .. fields .. "</x>"))
end

describe("lxmpp.forms", function ()
  it("builds a form with title, instructions, labels, options, defaults and overrides", function ()
    local f = layout():form({ name = "Ann", notes = "one\ntwo", tags = { "a", "c" } })
    assert.equal("x", f.name)
    assert.equal("jabber:x:data", f.attr.xmlns)
    assert.equal("form", f.attr.type)
    assert.equal("Settings", f:get_child_text("title"))
    assert.equal("Fill in", f:get_child_text("instructions"))
    local by = {}
    for field in f:childtags("field") do by[field.attr.var or "fixed"] = field end
    assert.equal("urn:example:settings", by.FORM_TYPE:get_child_text("value"))
    assert.equal("Name", by.name.attr.label)
    assert.is_not_nil(by.name:get_child("required"))
    assert.equal("Your name", by.name:get_child_text("desc"))
    assert.equal("1", by.on:get_child_text("value"))
    local notes = {}
    for v in by.notes:childtags("value") do notes[#notes + 1] = v:get_text() end
    assert.same({ "one", "two" }, notes)
    local options = {}
    for o in by.colour:childtags("option") do options[#options + 1] = { o.attr.label, o:get_child_text("value") } end
    assert.same({ { nil, "red" }, { "Blue", "blue" } }, options)
    assert.is_nil(by.secret:get_child("value"))
    assert.equal("A section", by.fixed:get_child_text("value"))
  end)

  it("submits values only, and cancels with an empty form", function ()
    local f = layout():form({ name = "Ann", on = false }, "submit")
    assert.is_nil(f:get_child("title"))
    local vars = {}
    for field in f:childtags("field") do
      vars[#vars + 1] = field.attr.var
      assert.is_nil(field.attr.label)
      assert.is_nil(field:get_child("option"))
    end
    assert.same({ "FORM_TYPE", "name", "on" }, vars)
    local cancel = layout():form(nil, "cancel")
    assert.equal("cancel", cancel.attr.type)
    assert.equal(0, #cancel.tags)
  end)

  it("reads a submission with the layout's types, whatever types it declares", function ()
    local values = assert(layout():data(x(
      "<field var='FORM_TYPE'><value>urn:example:settings</value></field>"
      .. "<field var='name'><value>Ann</value></field>"
      .. "<field var='notes'><value>one</value><value>two</value></field>"
      .. "<field var='on' type='text-single'><value>false</value></field>"
      .. "<field var='colour'><value>blue</value></field>"
      .. "<field var='tags'><value>b</value><value>c</value></field>"
      .. "<field var='owner'><value>Ann@Example.COM</value></field>"
      .. "<field var='admins'><value>a@x</value><value>B@x/r</value></field>"
      .. "<field var='unknown'><value>ignored</value></field>")))
    assert.same({
      FORM_TYPE = "urn:example:settings", name = "Ann", notes = "one\ntwo", on = false, colour = "blue",
      tags = { "b", "c" }, owner = "ann@example.com", admins = { "a@x", "b@x/r" },
    }, values)
    -- fields left out are absent, not defaulted
    assert.same({ name = "Bob" }, layout():data(x("<field var='name'><value>Bob</value></field>")))
    assert.same({ on = true }, layout():data(x("<field var='on'><value>1</value></field>")))
  end)

  it("refuses values that do not fit the layout with bad-request", function ()
    local cases = {
      { "<field var='on'><value>yes</value></field>", "not a boolean" },
      { "<field var='colour'><value>green</value></field>", "not one of the options" },
      { "<field var='tags'><value>z</value></field>", "not one of the options" },
      { "<field var='owner'><value>@bad</value></field>", "invalid JID" },
      { "<field var='admins'><value>a@@b</value></field>", "invalid JID" },
      { "<field var='name'><value>a</value><value>b</value></field>", "2 values" },
      { "<field var='FORM_TYPE'><value>urn:other</value></field>", "FORM_TYPE" },
      { "<field var='name' type='nonsense'/>", "unknown type" },
    }
    for _, case in ipairs(cases) do
      local v, msg, cond = layout():data(x(case[1]))
      assert.is_nil(v, case[1])
      assert.matches(case[2], msg, 1, true)
      assert.equal("bad-request", cond)
    end
    local v, msg, cond = layout():data(st.stanza("query", { xmlns = "jabber:iq:register" }))
    assert.same({ nil, "not a jabber:x:data form", "bad-request" }, { v, msg, cond })
  end)

  it("parses any form into a layout with typed values, which can be filled in and submitted", function ()
    local sent = layout():form({ name = "Ann", tags = { "a" }, admins = { "a@x" } })
    local form = assert(forms.parse(st.parse(tostring(sent))))
    assert.equal("form", form.type)
    assert.equal("Settings", form.title)
    assert.equal("urn:example:settings", form.form_type)
    assert.equal("Ann", form.values.name)
    assert.equal(true, form.values.on)
    assert.same({ "a" }, form.values.tags)
    assert.equal("", form.values.secret)
    assert.equal("Name", form[2].label)
    assert.is_true(form[2].required)
    assert.equal("fixed", form[10].type)
    -- the client side: fill in and submit with the server's own layout
    local reply = forms.new(form):form({ name = "Bob", colour = "red" }, "submit")
    local values = assert(layout():data(st.parse(tostring(reply))))
    assert.equal("Bob", values.name)
    assert.equal("red", values.colour)
    assert.equal("urn:example:settings", values.FORM_TYPE)
    assert.same({ "a" }, values.tags)
  end)

  it("infers untyped fields of a submitted or result form from their values (XEP-0004 §3.3)", function ()
    -- XEP-0060's example of a submitted node configuration: untyped fields,
    -- one of them with three values
    local fields = "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value>" ..
      "</field><field var='pubsub#title'><value>Princely Musings</value></field>" ..
      "<field var='pubsub#roster_groups_allowed'><value>friends</value><value>servants</value>" ..
      "<value>courtiers</value></field><field var='pubsub#empty'/>"
    for _, form_type in ipairs({ "submit", "result" }) do
      local form = assert(forms.parse(x(fields, form_type)))
      assert.same({ "friends", "servants", "courtiers" }, form.values["pubsub#roster_groups_allowed"])
      assert.equal("list-multi", form[3].type)
      assert.equal("Princely Musings", form.values["pubsub#title"])
      assert.equal("text-single", form[2].type)
      assert.equal("", form.values["pubsub#empty"])
      assert.equal("http://jabber.org/protocol/pubsub#node_config", form.form_type)
      -- and it is a layout that submits the same values again
      local again = assert(forms.parse(st.parse(tostring(forms.new(form):form(form.values, "submit")))))
      assert.same(form.values, again.values)
    end
    -- in a form of type "form" the default is text-single, which takes one value
    local _, msg, cond = forms.parse(x(fields, "form"))
    assert.matches("has 3 values", msg, 1, true)
    assert.equal("bad-request", cond)
  end)

  it("refuses malformed forms from peers", function ()
    assert.matches("no var", select(2, forms.parse(x("<field type='text-single'/>", "form"))))
    assert.matches("duplicate", select(2, forms.parse(x("<field var='a'/><field var='a'/>", "form"))))
    assert.matches("unknown type", select(2, forms.parse(x("<field var='a'/>", "weird"))))
    assert.matches("not a boolean", select(2, forms.parse(x("<field var='a' type='boolean'><value>2</value></field>"))))
    local many = ("<field var='v'/>"):rep(1)
    for i = 1, 300 do many = many .. "<field var='f" .. i .. "'/>" end
    assert.matches("more than", select(2, forms.parse(x(many, "form"))))
    local _, _, cond = forms.parse(st.stanza("x"))
    assert.equal("bad-request", cond)
  end)

  it("raises on misuse", function ()
    assert.has_error(function () forms.new("x") end)
    assert.has_error(function () forms.new{ { var = "a", type = "nope" } } end)
    assert.has_error(function () forms.new{ { type = "text-single" } } end)
    assert.has_error(function () forms.new{ { var = "a" }, { var = "a" } } end)
    assert.has_error(function () forms.new{ { var = "a", type = "list-single", options = { 1 } } } end)
    local f = layout()
    assert.has_error(function () f:form({ on = "yes" }) end)
    assert.has_error(function () f:form({ tags = "a" }) end)
    assert.has_error(function () f:form({ name = {} }) end)
    assert.has_error(function () f:form(nil, "draft") end)
  end)
end)
