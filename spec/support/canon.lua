-- Canonical, order-independent text of stanzas and parser event lists, so
-- specs can compare what two parses produced with one string comparison.
local type, pairs, tostring, concat, sort = type, pairs, tostring, table.concat, table.sort

local canon

-- <name {xmlns} a='v' ...>children</name>, attributes sorted, "\1" shown as "|"
function canon(node)
  if type(node) == "string" then
    return (node:gsub("[%c\\]", function(c) return ("\\%d"):format(c:byte()) end))
  end
  local keys = {}
  for k in pairs(node.attr or {}) do keys[#keys + 1] = k end
  sort(keys)
  local out = { "<", node.name }
  for _, k in pairs(keys) do
    out[#out + 1] = " " .. k:gsub("\1", "|") .. "=" .. canon(node.attr[k])
  end
  out[#out + 1] = ">"
  for i = 1, #node do out[#out + 1] = canon(node[i]) end
  out[#out + 1] = "</" .. tostring(node.name) .. ">"
  return concat(out)
end

-- Feeds `chunks` (a list of strings) to a new parser and returns the list of
-- events as strings: "open <stream ...>", stanza canon, "close", "error:cond".
local function events(lxmpp, chunks, opts)
  local ev = {}
  local p = lxmpp.stream_parser({
    stream_open = function(attr)
      ev[#ev + 1] = "open " .. canon({ name = "stream", attr = attr })
    end,
    stanza = function(s) ev[#ev + 1] = canon(s) end,
    stream_close = function() ev[#ev + 1] = "close" end,
  }, opts)
  for _, c in ipairs(chunks) do
    local ok, _, cond = p:feed(c)
    if not ok then
      ev[#ev + 1] = "error:" .. tostring(cond)
      break
    end
  end
  p:close()
  return ev
end

-- Splits s at the given sorted byte offsets.
local function split_at(s, cuts)
  local out, prev = {}, 0
  for _, c in ipairs(cuts) do
    if c > prev and c < #s then
      out[#out + 1] = s:sub(prev + 1, c)
      prev = c
    end
  end
  out[#out + 1] = s:sub(prev + 1)
  return out
end

local function bytes(s)
  local out = {}
  for i = 1, #s do out[i] = s:sub(i, i) end
  return out
end

return { canon = canon, events = events, split_at = split_at, bytes = bytes }
