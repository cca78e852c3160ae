-- Two sessions of the TLS engine (csrc/tls.c) talking in memory, for the
-- specs that check it without sockets (tls_spec, tls_resume_spec).
local compat = require "lxmpp.compat"

local M = {}

--- tls_pair.handshake(cs, ss) -> c, s: pumps ciphertext between a client
-- and a server session until both handshakes ended (or nothing moves any
-- more); c and s are each side's last handshake() results (table.pack).
function M.handshake(cs, ss)
  local c, s
  for _ = 1, 50 do
    c = compat.pack(cs:handshake())
    s = compat.pack(ss:handshake())
    local x, y = cs:take(), ss:take()
    if x ~= "" then ss:recv(x) end
    if y ~= "" then cs:recv(y) end
    if c[1] ~= "want" and s[1] ~= "want" and x == "" and y == "" then break end
    if x == "" and y == "" and (c[1] == nil or s[1] == nil) then break end
  end
  return c, s
end

return M
