-- csrc/net_io.c gives a connection's output buffers up as soon as they empty
-- (an idle connection holds none), into a small pool of spares its loop
-- keeps for the next queue to fill: at most 16 buffers of at most 16 KiB,
-- 64 KiB in all, so a burst never leaves more behind. Reused buffers carry
-- nothing of what they held before.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local pki = require "spec.support.pki"

local assert_clean = require "spec.support.clean"

local POOL_N, POOL_BYTES = 16, 65536

local function wait_until(pred, timeout)
  local t0 = core.now()
  while not pred() do
    if core.now() - t0 > (timeout or 5) * require("spec.support.slow").factor then
      error("timed out waiting", 2)
    end
    lxmpp.sleep(0.005)
  end
end

local function assert_bounded()
  local n, bytes = core.net_spare()
  assert.is_true(n <= POOL_N, n .. " spare buffers")
  assert.is_true(bytes <= POOL_BYTES, bytes .. " spare bytes")
  return n, bytes
end

-- A listener in raw mode collecting each connection's bytes.
local function sink(tls)
  local rec = { got = {} }
  rec.l = assert(net.listen("127.0.0.1", 0, function(conn)
    local i = #rec.got + 1
    rec.got[i] = {}
    conn:on("data", function(b) rec.got[i][#rec.got[i] + 1] = b end)
    conn:on("eof", function() conn:close() end)
    if tls then conn:starttls(tls.server) end
    conn:raw()
  end))
  return rec
end

local function received(rec, i) return table.concat(rec.got[i] or {}) end

for _, mode in ipairs({ "plaintext", "TLS" }) do
  describe("spare output buffers (" .. mode .. ")", function()
    after_each(assert_clean)

    local tls
    setup(function()
      if mode == "TLS" then
        local p = pki.get()
        tls = {
          server = assert(core.tls_context({ mode = "server", cert = p.certs.good.cert, key = p.certs.good.key })),
          client = assert(core.tls_context({ mode = "client", cafile = p.ca })),
        }
      end
    end)

    local function connect(rec)
      local c = assert(net.connect("127.0.0.1", rec.l:port()))
      if tls then
        local done = false
        c:on("tls-done", function() done = true end)
        assert(c.c:starttls(tls.client, "example.test"))
        wait_until(function() return done end)
      end
      return c
    end

    it("are reused and stay within 16 buffers and 64 KiB, through many connections and a large burst", function()
      lxmpp.run(function()
        local rec = sink(tls)
        local conns, sent = {}, {}
        for i = 1, 24 do
          conns[i] = connect(rec)
          sent[i] = {}
        end
        -- rounds of writes on every connection at once: each round fills
        -- and empties 24 queues; one large write in between
        for round = 1, 6 do
          for i, c in ipairs(conns) do
            local chunk = ("<r%d c%d>%s</r%d>"):format(round, i, ("y"):rep(round * 700 + i), round)
            if round == 3 and i == 1 then chunk = ("z"):rep(1024 * 1024) end
            sent[i][#sent[i] + 1] = chunk
            assert(c:write(chunk))
          end
          wait_until(function()
            for i = 1, #conns do
              if #received(rec, i) ~= #table.concat(sent[i]) then return false end
            end
            return true
          end, 20)
          assert_bounded()
        end
        local n, bytes = assert_bounded()
        assert.is_true(n >= 1 and bytes > 0, "buffers are kept for reuse")
        -- the large write's buffer was not kept: everything kept is small
        assert.is_true(bytes <= n * 16384)
        for i = 1, #conns do
          -- byte for byte (connections are accepted in order of connecting,
          -- which the sink does not know: match by content)
          local want = table.concat(sent[i])
          local found = false
          for j = 1, #conns do
            if received(rec, j) == want then found = true end
          end
          assert.is_true(found, "connection " .. i .. "'s bytes arrived intact")
        end
        for _, c in ipairs(conns) do c:close() end
        rec.l:close()
      end)
    end)
  end)
end
