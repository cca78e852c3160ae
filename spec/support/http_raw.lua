-- A raw HTTP/1.1 client for specs of the server's HTTP side (httpd, BOSH):
-- bytes written as given over a real loopback connection (TLS when given a
-- context), answers parsed back as they arrive, so specs can send what no
-- well-behaved client would.
--
--   local c = http_raw.client(port [, tls_ctx])
--   c:send(bytes)  c:take([head_only]) -> answer | nil   c:answer([timeout [, head_only]])
--   c:pending()  c:wait_closed([timeout])  c:close()
--   answer = { status =, head = (status line and headers), headers = (lowercased), body =, raw = }
--   http_raw.until_true(pred [, timeout])   -- polling, timeouts scaled by spec/support/slow.lua
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local slow = require "spec.support.slow"
local assert = require "luassert"

local M = {}

--- Waits until pred() is true (polling), at most timeout seconds (scaled).
function M.until_true(pred, timeout)
  local deadline = core.now() + (timeout or 5) * slow.factor
  while not pred() do
    if core.now() > deadline then return false end
    lxmpp.sleep(0.01)
  end
  return true
end
local until_true = M.until_true

local Client = {}
Client.__index = Client

function M.client(port, ctx)
  local conn = assert(net.connect("127.0.0.1", port))
  local cl = setmetatable({ conn = conn, buf = "", closed = false }, Client)
  conn:on("data", function(b) cl.buf = cl.buf .. b end)
  for _, e in ipairs({ "closed", "read-error" }) do conn:on(e, function() cl.closed = true end) end
  -- the server's EOF: our side closes too, as HTTP clients do (the server
  -- lingers until it sees ours: csrc/net_io.c, lx_net_drain)
  conn:on("eof", function()
    cl.closed = true
    conn:shutdown()
  end)
  if ctx then
    local done
    conn:on("tls-done", function() done = true end)
    conn:on("tls-failed", function() done = false end)
    assert(conn:starttls(ctx, "example.test"))
    assert(until_true(function() return done ~= nil end))
    assert(done, "TLS handshake")
  end
  conn:raw()
  return cl
end

function Client:send(bytes) return assert(self.conn:write(bytes)) end

--- The next whole answer in the buffer, or nil.
function Client:take(head_only)
  local e = self.buf:find("\r\n\r\n", 1, true)
  if not e then return nil end
  local head = self.buf:sub(1, e + 1)
  local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d) "))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r]+): ([^\r]*)") do headers[name:lower()] = value end
  local len = head_only and 0 or tonumber(headers["content-length"] or "0")
  if #self.buf < e + 3 + len then return nil end
  local body = self.buf:sub(e + 4, e + 3 + len)
  local raw = self.buf:sub(1, e + 3 + len)
  self.buf = self.buf:sub(e + 4 + len)
  return { status = status, head = head, headers = headers, body = body, raw = raw }
end

--- The next answer, waiting at most timeout seconds (nil then, or when
-- the connection closed first).
function Client:answer(timeout, head_only)
  local a
  until_true(function()
    a = self:take(head_only)
    return a ~= nil or self.closed
  end, timeout)
  return a or self:take(head_only)
end

--- Nothing answered yet and the connection still open.
function Client:pending()
  return not self.buf:find("\r\n\r\n", 1, true) and not self.closed
end

function Client:wait_closed(timeout) return until_true(function() return self.closed end, timeout) end
function Client:close() self.conn:abort() end

return M
