-- WebSocket frames (RFC 6455 §5.2) written and read by hand, as a peer
-- would, for the specs of lxmpp's C framing (ws_frame_spec) and of the
-- endpoints that use it (ws_redirect_spec). Lua 5.1-clean (lxmpp.compat).
local compat = require "lxmpp.compat"

local M = {}

local band, bor, bxor, lshift = compat.band, compat.bor, compat.bxor, compat.lshift

-- n as size big-endian bytes (string.pack(">I8", n) without string.pack,
-- which Lua 5.1 and LuaJIT lack), and back: the number and the next position
function M.be_bytes(n, size)
  local b = {}
  for i = size, 1, -1 do
    b[i] = string.char(n % 256)
    n = (n - n % 256) / 256
  end
  return table.concat(b)
end
function M.be_number(s, at, size)
  local n = 0
  for i = at, at + size - 1 do n = n * 256 + s:byte(i) end
  return n, at + size
end

-- frame{ op = n, payload, fin = true, rsv = 0, key = "abcd" | false,
--        len16 = true, len64 = true }: the bytes of one frame, as a
-- peer would write them (key: masked with those 4 bytes).
function M.frame(t)
  local payload = t[1] or ""
  local n = #payload
  local b0 = bor(bor((t.fin == false) and 0 or 0x80, lshift(t.rsv or 0, 4)), t.op or 1)
  local mask = t.key and 0x80 or 0
  local head
  if t.len64 or n > 65535 then
    head = string.char(b0, bor(mask, 127)) .. M.be_bytes(n, 8)
  elseif t.len16 or n > 125 then
    head = string.char(b0, bor(mask, 126)) .. M.be_bytes(n, 2)
  else
    head = string.char(b0, bor(mask, n))
  end
  if not t.key then return head .. payload end
  local k = { t.key:byte(1, 4) }
  local out = {}
  for i = 1, n do out[i] = string.char(bxor(payload:byte(i), k[(i - 1) % 4 + 1])) end
  return head .. t.key .. table.concat(out)
end

-- Decodes the frames in s (what a conn in raw mode received); returns a
-- list of { op =, fin =, masked =, payload = } and the undecoded rest.
function M.unframe(s)
  local frames, pos = {}, 1
  while #s - pos + 1 >= 2 do
    local b0, b1 = s:byte(pos, pos + 1)
    local n, at = band(b1, 0x7F), pos + 2
    if n == 126 then
      if #s < at + 1 then break end
      n, at = M.be_number(s, at, 2)
    elseif n == 127 then
      if #s < at + 7 then break end
      n, at = M.be_number(s, at, 8)
    end
    local masked = band(b1, 0x80) ~= 0
    local key
    if masked then key = { s:byte(at, at + 3) }; at = at + 4 end
    if #s < at + n - 1 then break end
    local p = s:sub(at, at + n - 1)
    if masked then
      local out = {}
      for i = 1, n do out[i] = string.char(bxor(p:byte(i), key[(i - 1) % 4 + 1])) end
      p = table.concat(out)
    end
    frames[#frames + 1] = { op = band(b0, 0x0F), fin = band(b0, 0x80) ~= 0, masked = masked, payload = p }
    pos = at + n
  end
  return frames, s:sub(pos)
end

return M
