-- What `do local _ <close> = v end` does, on every Lua lxmpp supports: on
-- 5.4 that very statement (compiled with load, which older versions never
-- parse); before 5.4, which has no to-be-closed variables, v's __close
-- metamethod called as 5.4 would call it (value, nil).
local load, getmetatable, assert, version = load, getmetatable, assert, _VERSION

local M = {}

M.native = version >= "Lua 5.4"

local close_scope = M.native and assert(load("local v = ... do local _ <close> = v end"))

function M.scope(v)
  if close_scope then return close_scope(v) end
  local mt = assert(getmetatable(v), "not a to-be-closed value: no metatable")
  assert(mt.__close, "not a to-be-closed value: no __close")(v, nil)
end

return M
