-- bench/parse_once.lua: one parse of the generated stream, for instruction
-- counts (docs/performance.md, "Where the parse time goes"):
--
--   valgrind --tool=callgrind lua5.4 bench/parse_once.lua MODE [N] [SEED]
--
-- MODE: lxmpp (stream_parser), prosody (util.xmppstream, set up as
-- bench/parse.lua does it) or none (everything but the parse: generation,
-- chunking, loading; subtract it). N: stanzas (default 10000), SEED: default 42.
-- The stream is cut into the same 16 KiB chunks as bench/parse.lua; the
-- stanza handlers only count.

local MODE = arg[1]
local common = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local N = common.integer(arg[2] or "10000")
local SEED = common.integer(arg[3] or "42")
local STANZA_SIZE_LIMIT = 262144

local function die(msg)
  io.stderr:write("bench/parse_once.lua: ", msg, "\n")
  os.exit(1)
end

if MODE ~= "lxmpp" and MODE ~= "prosody" and MODE ~= "none" then
  die("MODE must be lxmpp, prosody or none")
end
if not N or N < 1 or not SEED then die("N and SEED must be integers") end

local script_dir = (arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
local xml = dofile(script_dir .. "/gen_stream.lua")(N, SEED)
local chunks = {}
for i = 1, #xml, 16384 do chunks[#chunks + 1] = xml:sub(i, i + 16383) end
xml = nil -- luacheck: ignore 311

-- Both libraries are loaded in every mode, so "none" subtracts their loading.
local lxmpp = require "lxmpp"
local PROSODY = os.getenv("LXMPP_PROSODY_DIR") or "/usr/lib/prosody"
package.path = PROSODY .. "/?.lua;" .. package.path
package.cpath = PROSODY .. "/?.so;" .. package.cpath
local xmppstream = require "util.xmppstream"
require "util.stanza"
collectgarbage("collect")

local n = 0
if MODE == "lxmpp" then
  local p = lxmpp.stream_parser({ stanza = function() n = n + 1 end },
    { max_stanza_size = STANZA_SIZE_LIMIT })
  for i = 1, #chunks do
    local ok, msg = p:feed(chunks[i])
    if not ok then die("lxmpp: " .. tostring(msg)) end
  end
elseif MODE == "prosody" then
  local session = { notopen = true }
  local stream = xmppstream.new(session, {
    default_ns = "jabber:client",
    streamopened = function(sess) sess.notopen = nil end,
    streamclosed = function() end,
    error = function(_, err) die("prosody: " .. tostring(err)) end,
    handlestanza = function() n = n + 1 end,
  }, STANZA_SIZE_LIMIT, { max_elements = 25000 })
  for i = 1, #chunks do
    local ok, err = stream:feed(chunks[i])
    if not ok then die("prosody: " .. tostring(err)) end
  end
end
if MODE ~= "none" and n ~= N then die(("%s saw %d stanzas, generated %d"):format(MODE, n, N)) end
print(("%s: %d stanzas"):format(MODE, n))
