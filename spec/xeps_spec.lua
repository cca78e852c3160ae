-- docs/xeps.md is generated from lua/lxmpp/xeps.lua (`make docs`): it must
-- match, every module a row names must exist, and every client plugin must
-- be listed under some XEP.
local compat = require "lxmpp.compat"
local xeps = require "lxmpp.xeps"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

local function exists(rel)
  local f = io.open(ROOT .. "/" .. rel, "rb")
  if f then f:close() end
  return f ~= nil
end

describe("lxmpp.xeps", function()
  it("is what docs/xeps.md says (run `make docs` after editing lua/lxmpp/xeps.lua)", function()
    local f = assert(io.open(ROOT .. "/docs/xeps.md", "rb"))
    local text = f:read("*a")
    f:close()
    assert.equal(xeps.markdown(), text)
  end)

  it("has well-formed rows in XEP order naming modules that exist", function()
    local STATUS = { complete = true, partial = true, ["in progress"] = true }
    local SIDES = { client = true, server = true, component = true, both = true }
    local prev = 0
    for _, x in ipairs(xeps.list) do
      assert.is_true(compat.math_type(x.xep) == "integer" and x.xep >= prev, tostring(x.xep))
      prev = x.xep
      assert.matches("^%d+%.%d+[%.%d]*$", x.version)
      assert.is_true(STATUS[x.status], x.status)
      assert.is_true(SIDES[x.side], x.side)
      assert.is_true(#x.modules > 0 or x.status == "in progress", tostring(x.xep))
      for _, m in ipairs(x.modules) do
        local path = "lua/" .. m:gsub("%.", "/")
        assert.is_true(exists(path .. ".lua") or exists(path .. "/init.lua"), m)
      end
    end
  end)

  it("lists every client plugin", function()
    local listed = {}
    for _, x in ipairs(xeps.list) do
      for _, m in ipairs(x.modules) do listed[m] = true end
    end
    local p = io.popen('ls "' .. ROOT .. '/lua/lxmpp/plugins"')
    for name in p:lines() do
      local m = "lxmpp.plugins." .. name:gsub("%.lua$", "")
      -- roster and presence are RFC 6121
      if m ~= "lxmpp.plugins.roster" then
        assert.is_true(listed[m] == true, m .. " is in no row of lua/lxmpp/xeps.lua")
      end
    end
    p:close()
  end)
end)
