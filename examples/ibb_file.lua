-- Sends a file to another XMPP client over an in-band bytestream
-- (XEP-0047), or receives files from the JIDs it trusts, checking each
-- against the size and SHA-256 its sender announced.
--
--   LXMPP_SEND_TO=bob@example.org/desk LXMPP_FILE=notes.txt \
--     lua5.4 examples/ibb_file.lua alice@example.org secret [HOST [PORT]]
--   LXMPP_ACCEPT_FROM=alice@example.org LXMPP_SAVE_DIR=/tmp/in [LXMPP_RECEIVE_COUNT=1] \
--     lua5.4 examples/ibb_file.lua bob@example.org/desk secret [HOST [PORT]]

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local jid = require "lxmpp.jid"
local common = require "common"

local opts = common.options(arg)
local send_to, path = os.getenv("LXMPP_SEND_TO"), os.getenv("LXMPP_FILE")
local accept_from = os.getenv("LXMPP_ACCEPT_FROM")
local save_dir = os.getenv("LXMPP_SAVE_DIR") or "."
local count = tonumber(os.getenv("LXMPP_RECEIVE_COUNT") or "") -- nil: forever

if not (send_to and path) and not accept_from then
  io.stderr:write("set LXMPP_SEND_TO and LXMPP_FILE to send, or LXMPP_ACCEPT_FROM to receive\n")
  os.exit(2)
end

lxmpp.run(function()
  local c = common.connect(opts)
  c:send_presence()

  if send_to then
    local f = assert(io.open(path, "rb"))
    local data = f:read("*a")
    f:close()
    local name = path:match("[^/]*$")
    local last = -1
    local ok, sha, cond = c:ibb_send(send_to, data, { name = name, block_size = 4096,
      progress = function(done, total)
        local pct = total > 0 and math.floor(done * 100 / total) or 100   -- (no // before Lua 5.3)
        if pct >= last + 25 then last = pct; common.say("%3d%% of %s", pct, name) end
      end })
    if ok then common.say("sent %s (%d bytes, sha-256 %s)", name, #data, sha)
    else common.say("sending failed: %s (%s)", sha, cond) end
    c:close()
    os.exit(ok and 0 or 1)
  end

  local trusted = jid.bare(jid.prep(accept_from) or accept_from)
  c:ibb_receive(function(offer)
    local ok = jid.bare(offer.from) == trusted
    common.say("%s %s from %s", ok and "accepting" or "refusing",
      offer.file and offer.file.name or offer.sid, offer.from)
    return ok
  end, { max_size = 64 * 1024 * 1024 })
  local received = 0
  local function done()
    received = received + 1
    if count and received >= count then c:close() end
  end
  c:on("ibb-received", function(t)
    -- never trust a peer's file name as a path
    local name = ((t.file and t.file.name) or t.sid):gsub("[^%w%._%-]", "_"):gsub("^%.+", "_")
    local out = assert(io.open(save_dir .. "/" .. name, "wb"))
    out:write(t.data)
    out:close()
    common.say("received %s (%d bytes, sha-256 %s%s)", name, #t.data, t.sha256,
      t.file and t.file.sha256 and ", verified" or ", not announced")
    done()
  end)
  c:on("ibb-failed", function(t, msg, cond)
    common.say("transfer %s from %s failed: %s (%s)", t.sid, t.from, msg, cond)
    done()
  end)
  common.say("receiving files from %s as %s", trusted, c.jid)
end)
