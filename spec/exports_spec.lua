-- lxmpp.core exports one symbol, luaopen_lxmpp_core (csrc/lx.h):
-- both the Makefile's build (-fvisibility=hidden) and one with the rockspec's
-- flags (luarocks' plain CFLAGS), which relies on csrc/lx.h alone.
local sh = require "spec.support.sh"
local function exported(so)
  local p = assert(io.popen("nm -D --defined-only " .. so .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  local names = {}
  for kind, name in out:gmatch("%x+ (%a) ([%w_@.]+)") do
    -- functions and data; weak/absolute entries are the toolchain's (_init, _fini)
    if kind:match("[TDBR]") and not name:match("^_") then names[#names + 1] = name end
  end
  table.sort(names)
  return names, out
end

describe("lxmpp.core exports", function()
  it("only luaopen_lxmpp_core from build/lxmpp/core.so", function()
    local names, out = exported("build/lxmpp/core.so")
    assert.same({ "luaopen_lxmpp_core" }, names, out)
  end)

  it("only luaopen_lxmpp_core when built with the rockspec's flags", function()
    -- (without make check's sanitizer preload: gcc under LeakSanitizer
    -- aborts, or crashes, when this has to build)
    assert.is_true(sh.execute("unset LD_PRELOAD; make -s build-rock/lxmpp/core.so >/dev/null"))
    local names, out = exported("build-rock/lxmpp/core.so")
    assert.same({ "luaopen_lxmpp_core" }, names, out)
  end)
end)
