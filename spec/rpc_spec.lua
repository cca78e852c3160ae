-- Jabber-RPC (lua/lxmpp/plugins/rpc.lua): the XML-RPC value codec, data
-- driven, then calls between two clients of the embedded server.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local rpc = require "lxmpp.plugins.rpc"
local serve = require "spec.support.serve"

local function roundtrip(v)
  local el = rpc.encode(v)
  local back = assert(st.parse(tostring(el)))         -- what the peer reads
  local decoded, msg = rpc.decode(back)
  assert(msg == nil, msg)
  return decoded, tostring(el)
end

local function value(xml) return assert(st.parse("<value>" .. xml .. "</value>")) end

describe("rpc codec", function()
  it("maps Lua values to XML-RPC types and back", function()
    local cases = {
      { 42, "<int>42</int>" }, { -2147483648, "<int>-2147483648</int>" },
      { 2147483648, "<i8>2147483648</i8>" }, { true, "<boolean>1</boolean>" },
      { false, "<boolean>0</boolean>" }, { "a <b> & c", "<string>a &lt;b&gt; &amp; c</string>" },
      { 1.5, "<double>1.5</double>" }, { rpc.null, "<nil/>" },
      -- (digits, not LuaJIT's tostring "1e+15", for integers of 15 digits and more)
      { 1000000000000000, "<i8>1000000000000000</i8>" }, { -9007199254740992, "<i8>-9007199254740992</i8>" },
    }
    for _, c in ipairs(cases) do
      local back, xml = roundtrip(c[1])
      assert.equal("<value>" .. c[2] .. "</value>", xml)
      assert.equal(c[1], back)
      assert.equal(compat.math_type(c[1]), compat.math_type(back))
    end
    assert.equal("<value><nil/></value>", tostring(rpc.encode(nil)))
    local b = roundtrip(rpc.base64("\0\1\255binary"))
    assert.equal("\0\1\255binary", b.bytes)
    local d = roundtrip(rpc.datetime(0))
    assert.equal("19700101T00:00:00", d.value)
    assert.equal("20240131T12:30:00", roundtrip(rpc.datetime("20240131T12:30:00")).value)
    local nested = roundtrip({ name = "x", list = { 1, "two", { deep = true } }, empty = rpc.array(), none = rpc.struct() })
    assert.equal("x", nested.name)
    assert.same({ 1, "two", { deep = true } }, { nested.list[1], nested.list[2], { deep = nested.list[3].deep } })
    assert.equal(0, #nested.empty)
    assert.equal("rpc.array", getmetatable(nested.empty).__name)
    assert.equal("rpc.struct", getmetatable(nested.none).__name)
    -- no type element: a string (XML-RPC's default)
    assert.equal("plain", rpc.decode(value("plain")))
    assert.equal(7, rpc.decode(value("<i4> 7 </i4>")))
    assert.equal(-3, rpc.decode(value("<i8>-3</i8>")))
    assert.equal(1e10, rpc.decode(value("<double>1e10</double>")))
  end)

  it("refuses malformed values", function()
    local bad = {
      "<int>12a</int>", "<int>2147483648</int>", "<i4>-2147483649</i4>", "<int></int>", "<int>1.5</int>",
      "<i8>99999999999999999999</i8>", "<boolean>yes</boolean>", "<boolean>2</boolean>", "<double>one</double>",
      "<double>.</double>", "<base64>!!!</base64>", "<dateTime.iso8601>yesterday</dateTime.iso8601>",
      "<dateTime.iso8601>20241399T00:00:00</dateTime.iso8601>", "<float>1</float>", "<int>1</int><int>2</int>",
      "<array><value><int>1</int></value></array>", "<array><data><int>1</int></data></array>",
      "<struct><member><value><int>1</int></value></member></struct>", "<struct><x/></struct>",
      "<string><b>bold</b></string>", "text<int>1</int>",
    }
    for _, xml in ipairs(bad) do
      local v, msg, cond = rpc.decode(value(xml))
      assert.is_nil(v, xml)
      assert.equal("bad-request", cond, xml)
      assert.is_string(msg)
    end
    -- nesting is bounded
    local deep = ("<array><data><value>"):rep(40) .. "<int>1</int>" .. ("</value></data></array>"):rep(40)
    local v, msg = rpc.decode(value(deep))
    assert.is_nil(v)
    assert.matches("deeper", msg)
  end)

  it("raises on values it cannot send", function()
    assert.has_error(function() rpc.encode(function() end) end)
    assert.has_error(function() rpc.encode({ 1, 2, x = 3 }) end)
    assert.has_error(function() rpc.encode(0 / 0) end)
    assert.has_error(function() rpc.datetime("tomorrow") end)
    assert.has_error(function() rpc.fault("4", "x") end)
  end)
end)

describe("rpc between two clients", function()
  local USERS = { alice = "pw", bob = "pw", carol = "pw" }
  local function with_clients(fn)
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", "pw"))
      local b = assert(serve.login(port, "bob", "pw"))
      fn(a, b, port)
      a:close(); b:close()
    end)
  end

  it("calls exposed Lua functions with every type, faults as errors", function()
    with_clients(function(a, b)
      a:rpc_expose("sum", function(...)
        local t = 0
        for _, v in ipairs({ ... }) do t = t + v end
        return t
      end, { allow = { "bob@example.test" } })
      a:rpc_expose("echo", function(...) return rpc.array({ ... }) end, { allow = "anyone" })
      a:rpc_expose("count_nils", function(x, y, z) return (x == nil and 1 or 0) + (y == nil and 1 or 0) + (z == nil and 1 or 0) end,
        { allow = "anyone" })
      a:rpc_expose("nothing", function() end, { allow = "anyone" })
      a:rpc_expose("slow", function(s) lxmpp.sleep(s) return "done" end, { allow = "anyone" })
      a:rpc_expose("fail", function() error(rpc.fault(42, "the answer is not allowed")) end, { allow = "anyone" })
      a:rpc_expose("boom", function() error("secret internal path /etc/x") end, { allow = "anyone" })
      a:rpc_expose("unsendable", function() return function() end end, { allow = "anyone" })
      local to = a.jid
      assert.equal(6, b:rpc_call(to, "sum", 1, 2, 3))
      local echoed = b:rpc_call(to, "echo", 1, 2.5, true, "s", rpc.base64("\0x"), rpc.datetime(86400),
        { k = "v" }, { 1, 2 })
      assert.equal(1, echoed[1]); assert.equal(2.5, echoed[2]); assert.is_true(echoed[3])
      assert.equal("s", echoed[4]); assert.equal("\0x", echoed[5].bytes)
      assert.equal("19700102T00:00:00", echoed[6].value)
      assert.equal("v", echoed[7].k); assert.same({ 1, 2 }, { echoed[8][1], echoed[8][2] })
      assert.equal(2, b:rpc_call(to, "count_nils", nil, 1, nil))
      assert.equal(rpc.null, b:rpc_call(to, "nothing"))
      -- calls run as tasks: a slow one does not hold up the next
      local order = {}
      local done = lxmpp.task.waiter()
      lxmpp.spawn(function()
        local r = b:rpc_call(to, "slow", 0.3)
        order[#order + 1] = r
        done:wake()
      end)
      local r = assert(b:rpc_call(to, "sum", 1))
      order[#order + 1] = r
      done:wait()
      assert.same({ 1, "done" }, order)
      local v, msg, cond, code = b:rpc_call(to, "fail")
      assert.is_nil(v)
      assert.equal("the answer is not allowed", msg)
      assert.equal("rpc-fault", cond)
      assert.equal(42, code)
      v, msg, cond, code = b:rpc_call(to, "boom")
      assert.is_nil(v)
      assert.equal("rpc-fault", cond)
      assert.equal(-32500, code)
      assert.not_matches("secret", msg)                      -- Lua errors stay local
      v, msg, cond, code = b:rpc_call(to, "missing")
      assert.is_nil(v)
      assert.equal("no such method: missing", msg)
      assert.equal("rpc-fault", cond)
      assert.equal(-32601, code)
      v, msg, cond, code = b:rpc_call(to, "unsendable")
      assert.is_nil(v)
      assert.is_string(msg)
      assert.equal("rpc-fault", cond)
      assert.equal(-32603, code)
      a:rpc_expose("sum", nil)
      v, msg, cond, code = b:rpc_call(to, "sum", 1)
      assert.is_nil(v)
      assert.is_string(msg)
      assert.equal("rpc-fault", cond)
      assert.equal(-32601, code)
      assert.has_error(function() b:rpc_call(to, "sum", function() end) end)
      assert.has_error(function() b:rpc_call(to, "") end)
      assert.has_error(function() a:rpc_expose("x", 5) end)
      assert.has_error(function() a:rpc_expose("x", print, { allow = "everyone" }) end)
    end)
  end)

  it("allows only the account itself and the listed JIDs by default", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", "pw"))
      local a2 = assert(serve.login(port, "alice", "pw", "second"))
      local b = assert(serve.login(port, "bob", "pw"))
      local c = assert(serve.login(port, "carol", "pw"))
      a:rpc_expose("whoami", function() return "alice" end)
      a:rpc_expose("gate", function() return "in" end, { allow = function(bare) return bare == "carol@example.test" end })
      assert.equal("alice", a2:rpc_call(a.jid, "whoami"))
      local v, _, cond = b:rpc_call(a.jid, "whoami")
      assert.is_nil(v)
      assert.equal("forbidden", cond)
      assert.equal("in", c:rpc_call(a.jid, "gate"))
      v, _, cond = b:rpc_call(a.jid, "gate")
      assert.is_nil(v)
      assert.equal("forbidden", cond)
      a:close(); a2:close(); b:close(); c:close()
    end)
  end)

  it("refuses malformed responses and requests", function()
    with_clients(function(a, b)
      -- alice answers Jabber-RPC herself, badly
      local answers = {
        "<methodResponse><params><param><value><int>forty</int></value></param></params></methodResponse>",
        "<methodResponse><params/></methodResponse>",
        "<methodResponse><fault><value><string>oops</string></value></fault></methodResponse>",
        "<nothing/>",
      }
      local i = 0
      a:handle_iq("jabber:iq:rpc", function(iq)
        i = i + 1
        return st.reply(iq):add_child(st.parse("<query xmlns='jabber:iq:rpc'>" .. answers[i] .. "</query>"))
      end)
      for n = 1, #answers do
        local v, msg, cond = b:rpc_call(a.jid, "m")
        assert.is_nil(v, n)
        assert.equal("bad-request", cond, n)
        assert.is_string(msg)
      end
      -- bob serves; alice sends him requests no method should see
      local calls = 0
      b:rpc_expose("m", function() calls = calls + 1 return 1 end, { allow = "anyone" })
      local function raw(payload, typ)
        return a:request(st.iq({ type = typ or "set", to = b.jid })
          :add_child(st.parse("<query xmlns='jabber:iq:rpc'>" .. payload .. "</query>")))
      end
      local r, _, cond = raw("<methodCall><methodName>m</methodName><params><param><value><boolean>maybe</boolean>"
        .. "</value></param></params></methodCall>")
      assert.is_nil(r); assert.equal("bad-request", cond)
      r, _, cond = raw("<methodCall><params/></methodCall>")
      assert.is_nil(r); assert.equal("bad-request", cond)
      r, _, cond = raw("<methodCall><methodName>m</methodName></methodCall>", "get")
      assert.is_nil(r); assert.equal("bad-request", cond)
      assert.equal(0, calls)
      assert(raw("<methodCall><methodName>m</methodName></methodCall>"))
      assert.equal(1, calls)
    end)
  end)
end)
