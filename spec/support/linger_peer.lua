-- A client still sending when the server closes (spec/support/linger_peer.py
-- describes it), run from a task without blocking the loop, so an embedded
-- server in the same process serves it meanwhile.
--
--   local linger_peer = require "spec.support.linger_peer"
--   local r = linger_peer.run(port, { header = bytes, payload = bytes,
--                                     mode = "block" | "nowait", rcvbuf = bytes })
--   r.sent, r.send_error ("none" or an errno name), r.received,
--   r["end"] ("eof" or an errno name), r.last (the last 512 bytes read)
local proc = require "spec.support.proc"
local slow = require("spec.support.slow").factor

local M = {}

M.SCRIPT = proc.ROOT .. "/spec/support/linger_peer.py"

local function write_file(bytes)
  local name = os.tmpname()
  local f = assert(io.open(name, "wb"))
  f:write(bytes)
  f:close()
  return name
end

function M.run(port, opts)
  local hfile, pfile = write_file(opts.header), write_file(opts.payload)
  local p = proc.start({ "/usr/bin/python3", M.SCRIPT, tostring(port), tostring(opts.rcvbuf or 4096),
    hfile, pfile, opts.mode or "block" })
  local res = p:wait(30 * slow)
  os.remove(hfile)
  os.remove(pfile)
  assert(res.code == 0, "linger_peer.py failed: " .. tostring(res.code) .. " " .. res.err)
  local r = {}
  for k, v in res.out:gmatch("([%w_]+)=([^\n]*)") do r[k] = v end
  r.sent, r.received = tonumber(r.sent), tonumber(r.received)
  r.last = (r.last or ""):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  return r
end

return M
