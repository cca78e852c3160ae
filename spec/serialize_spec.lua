-- The C serializer behind tostring(stanza) (csrc/serialize*.c): escaping,
-- namespaces, refusal of anything that is not XML even in tables mutated by
-- hand, and parse(serialize(x)) == x.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = lxmpp.stanza
local support = require "spec.support.canon"
local data = require "spec.data.stream_cases"

local canon = support.canon

local function raw(name, attr, ...)
  return { name = name, attr = attr or {}, tags = {}, ... }
end

describe("serializer", function()
  describe("escaping", function()
    local rows = {
      { "text & < > stay text", raw("a", nil, "x & y < z > w"), "<a>x &amp; y &lt; z &gt; w</a>" },
      { "']]>' can never appear", raw("a", nil, "]]>"), "<a>]]&gt;</a>" },
      { "CR in text is a reference so a parser keeps it", raw("a", nil, "l1\r\nl2"), "<a>l1&#13;\nl2</a>" },
      { "quotes in text need nothing", raw("a", nil, "'\""), "<a>'\"</a>" },
      { "attribute values escape quotes, <, & and whitespace controls",
        raw("a", { v = "'\"<&>\t\n\r" }), "<a v='&apos;&quot;&lt;&amp;&gt;&#9;&#10;&#13;'/>" },
      { "UTF-8 passes through", raw("a", { v = "é" }, "中😀"), "<a v='é'>中😀</a>" },
      { "empty element is self-closed", raw("a"), "<a/>" },
      { "empty text still opens the element", raw("a", nil, ""), "<a></a>" },
    }
    for _, r in ipairs(rows) do
      it(r[1], function() assert.equal(r[3], core.serialize(r[2])) end)
    end
  end)

  describe("namespaces", function()
    it("writes xmlns only where it changes", function()
      local s = raw("message", { xmlns = "jabber:client" },
        raw("body", { xmlns = "jabber:client" }, "hi"),
        raw("x", { xmlns = "urn:x" }, raw("y", { xmlns = "urn:x" }), raw("z", { xmlns = "jabber:client" })),
        raw("w"))
      assert.equal("<message xmlns='jabber:client'><body>hi</body><x xmlns='urn:x'><y/>" ..
        "<z xmlns='jabber:client'/></x><w/></message>", core.serialize(s))
    end)
    it("writes xml:lang and namespaced attributes with a declared prefix", function()
      local out = core.serialize(raw("a", { ["xml:lang"] = "en", ["urn:p\1k"] = "v" }))
      assert.matches("xml:lang='en'", out, 1, true)
      local prefix = out:match("xmlns:(%w+)='urn:p'")
      assert.truthy(prefix)
      assert.matches(prefix .. ":k='v'", out, 1, true)
      local back = st.parse(out)
      assert.equal("v", back.attr["urn:p\1k"])
      assert.equal("en", back.attr["xml:lang"])
    end)
    it("writes the XML namespace spelled out as xml:", function()
      assert.equal("<a xml:space='preserve'/>",
        core.serialize(raw("a", { ["http://www.w3.org/XML/1998/namespace\1space"] = "preserve" })))
    end)
  end)

  describe("refuses what is not XML, even in tables built by hand", function()
    local bad = {
      { "invalid element name", raw("1a") },
      { "prefixed element name", raw("a:b") },
      { "missing name", { attr = {} } },
      { "invalid UTF-8 in text", raw("a", nil, "\255") },
      { "text cut inside a UTF-8 sequence", raw("a", nil, ("é"):sub(1, 1)) },
      { "NUL in text", raw("a", nil, "a\0b") },
      { "C0 control in text", raw("a", nil, "\27[31m") },
      { "U+FFFF in text", raw("a", nil, "\239\191\191") },
      { "surrogate in an attribute", raw("a", { v = "\237\160\128" }) },
      { "invalid attribute name", raw("a", { ["a b"] = "1" }) },
      { "prefix declaration", raw("a", { ["xmlns:p"] = "urn:p" }) },
      { "reserved xmlns namespace", raw("a", { ["http://www.w3.org/2000/xmlns/\1p"] = "x" }) },
      { "xmlns naming the xml namespace", raw("a", { xmlns = "http://www.w3.org/XML/1998/namespace" }) },
      { "xmlns naming the xmlns namespace", raw("a", { xmlns = "http://www.w3.org/2000/xmlns/" }) },
      { "a name expat cannot read back (U+10000)", raw("a\240\144\128\128") },
      { "an attribute name expat cannot read back (U+0132)", raw("a", { ["\196\178"] = "x" }) },
      { "the same attribute spelled twice", raw("a", { ["xml:lang"] = "en",
          ["http://www.w3.org/XML/1998/namespace\1lang"] = "de" }) },
      { "number attribute value", raw("a", { v = 1 }) },
      { "non-string xmlns", raw("a", { xmlns = true }) },
      { "attr that is not a table", { name = "a", attr = "x" } },
      { "a child that is neither text nor element", raw("a", nil, 42) },
      { "invalid UTF-8 in a nested child", raw("a", nil, raw("b", nil, raw("c", nil, "\192\128"))) },
    }
    for _, r in ipairs(bad) do
      it(r[1], function()
        assert.has_error(function() core.serialize(r[2]) end)
      end)
    end
    it("a cycle is an error, not a crash", function()
      local a = raw("a")
      a[1] = a
      assert.has_error(function() core.serialize(a) end)
    end)
    it("nesting beyond the limit is an error, not a stack overflow", function()
      local top = raw("a")
      local cur = top
      for _ = 1, 10000 do
        local c = raw("a")
        cur[1] = c
        cur = c
      end
      assert.has_error(function() core.serialize(top) end)
    end)
    it("a refused stanza leaves the serializer usable", function()
      assert.has_error(function() core.serialize(raw("a", nil, "\0")) end)
      assert.equal("<b>ok</b>", core.serialize(raw("b", nil, "ok")))
    end)
  end)

  describe("parse(serialize(x)) == x", function()
    it("for every stanza of the well-formed spec streams", function()
      local n = 0
      for _, case in ipairs(data.cases) do
        local p = lxmpp.stream_parser({
          stanza = function(s)
            n = n + 1
            local out = tostring(s)
            local back = assert(st.parse(out))
            -- a top-level stanza's namespace is implied by the stream; as a
            -- document of its own it is explicit, so compare in that frame
            back.attr.xmlns = s.attr.xmlns
            assert.equal(canon(s), canon(back), case.name)
            -- and serializing the result again gives the same stanza
            assert.equal(canon(back), canon(assert(st.parse(tostring(back)))), case.name)
          end,
        }, case.opts)
        p:feed(case.raw and case.input or data.header .. case.input)
      end
      assert.is_true(n > 20)
    end)
    it("for values full of characters that need escaping", function()
      local s = st.message({ to = "a'b\"c<d>&e\t\n\r", ["urn:x\1y"] = "\r\n" }, "]]> \r\n\t '\" & < >")
        :tag("x", { xmlns = "urn:x", ["xml:lang"] = "fr" }):text("中😀"):up()
      local back = assert(st.parse(tostring(s)))
      assert.equal(canon(s), canon(back))
    end)
    it("for the deepest stanza the serializer writes", function()
      local top = st.stanza("a")
      for _ = 2, 500 do top:tag("a") end
      local back = assert(st.parse(tostring(top)))
      assert.equal(tostring(top), tostring(back))
    end)
  end)

  it("declares an attribute namespace once, not on every element (no amplification)", function()
    local uri = "urn:" .. ("u"):rep(1000)
    local top = st.stanza("a", { [uri .. "\1k"] = "1" })
    for _ = 1, 200 do top:tag("b", { [uri .. "\1k"] = "2" }):up() end
    local out = tostring(top)
    local _, decls = out:gsub("xmlns:lxns", "")
    assert.equal(1, decls)
    assert.is_true(#out < 10000, #out .. " bytes")
    local back = assert(st.parse(out))
    assert.equal(canon(top), canon(back))
  end)

  it("keeps output proportional when element namespaces alternate down the tree", function()
    -- each <z/> in namespace A under a <y/> in the default namespace: written
    -- naively, A is declared again on every <z/>
    local A = "urn:example:" .. ("a"):rep(300)
    local B = "urn:example:" .. ("b"):rep(300)
    local xml = "<m xmlns='jabber:client' xmlns:p='" .. A .. "' xmlns:q='" .. B .. "'>" ..
      ("<y><p:z p:k='1'><q:w/><v/></p:z></y>"):rep(300) .. "</m>"
    local s = assert(st.parse(xml))
    local out = tostring(s)
    assert.is_true(#out < 2 * #xml, #out .. " bytes out of " .. #xml)
    local _, decls_a = out:gsub(A, "")
    assert.equal(1, decls_a)
    assert.equal(canon(s), canon(assert(st.parse(out))))
  end)

  it("writes ordinary stanzas without prefixes (xmlns where it changes)", function()
    local s = st.message({ to = "a@example.test" }):tag("x", { xmlns = "urn:y" }):tag("z"):up()
      :tag("w", { xmlns = "urn:w" })
    assert.equal("<message to='a@example.test'><x xmlns='urn:y'><z/><w xmlns='urn:w'/></x></message>", tostring(s))
  end)

  -- core.serialize(stanza, ns): what the stream layers send over a framing
  -- with one element per message (transport.websocket: RFC 7395 §3.3.3,
  -- XEP-0206 §8), where no stream header gives the default namespace
  describe("with a namespace for the top element", function()
    local NS = "jabber:client"
    it("declares it on a top element that has none, before the attributes", function()
      local s = st.message({ to = "a@example.test", type = "chat" }):text_tag("body", "hi")
      local out = core.serialize(s, NS)
      assert.matches("^<message xmlns='jabber:client' ", out)
      assert.equal(0, select(2, out:find("<body xmlns", 1, true)) or 0)
      local back = assert(st.parse(out))
      assert.equal(NS, back.attr.xmlns)
      assert.equal("hi", back:get_child_text("body"))
      -- without it, the same stanza as before
      assert.equal(tostring(s), core.serialize(s))
      assert.not_matches("xmlns", tostring(s), 1, true)
    end)
    it("leaves a top element's own namespace alone", function()
      local r = raw("r", { xmlns = "urn:xmpp:sm:3" })
      assert.equal("<r xmlns='urn:xmpp:sm:3'/>", core.serialize(r, NS))
      local e = raw("error", { xmlns = "http://etherx.jabber.org/streams" }, raw("x", { xmlns = "urn:x" }))
      assert.equal(core.serialize(e), core.serialize(e, NS))
    end)
    it("is inherited: children in it are not declared again, others are", function()
      local s = raw("iq", { type = "result" }, raw("query", { xmlns = NS }), raw("q", { xmlns = "urn:q" }, raw("c")))
      assert.equal("<iq xmlns='jabber:client' type='result'><query/><q xmlns='urn:q'><c/></q></iq>",
        core.serialize(s, NS))
    end)
    it("gives what transport.websocket.qualify makes of the plain serialization", function()
      local qualify = require("lxmpp.transport").websocket.qualify
      local cases = {
        st.message({ to = "b@example.test/r", id = "x xmlns='y'" }):text_tag("body", "'<&>\""),
        st.presence(), st.iq({ type = "get", id = "1" }):tag("ping", { xmlns = "urn:xmpp:ping" }),
        raw("a", { ["urn:p\1k"] = "v" }), raw("enable", { xmlns = "urn:xmpp:sm:3" }),
      }
      for _, s in ipairs(cases) do
        local framed = core.serialize(s, NS)
        assert.equal(qualify(core.serialize(s)), framed)
        assert.equal(canon(assert(st.parse(qualify(core.serialize(s))))), canon(assert(st.parse(framed))))
      end
    end)
    it("applies when the serializer hoists namespaces", function()
      local A = "urn:example:" .. ("a"):rep(300)
      local xml = "<m xmlns='" .. NS .. "' xmlns:p='" .. A .. "'>" .. ("<y><p:z><v/></p:z></y>"):rep(300) .. "</m>"
      local s = assert(st.parse(xml))
      s.attr.xmlns = nil                 -- as a stanza built without one
      local out = core.serialize(s, NS)
      assert.matches("^<m xmlns='jabber:client' xmlns:lxns1='", out)
      local _, decls = out:gsub(A, "")
      assert.equal(1, decls)
      local back = assert(st.parse(out))
      assert.equal(NS, back.attr.xmlns)
      s.attr.xmlns = NS
      assert.equal(canon(s), canon(back))
    end)
    it("is checked as any xmlns is", function()
      assert.has_error(function() core.serialize(raw("a"), "http://www.w3.org/2000/xmlns/") end)
      assert.has_error(function() core.serialize(raw("a"), "a\0b") end)
      assert.has_error(function() core.serialize(raw("a"), {}) end)
    end)
  end)

  describe("xml_escape", function()
    it("escapes for text and attributes alike", function()
      assert.equal("&lt;&amp;&gt;&apos;&quot;", core.xml_escape("<&>'\""))
    end)
    it("refuses text that is not XML", function()
      assert.has_error(function() core.xml_escape("\0") end)
    end)
  end)
end)
