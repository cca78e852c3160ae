-- A test PKI made by the suite itself with the `openssl` command line, once
-- per process, in a temporary directory removed when the Lua state closes.
--
--   local pki = require("spec.support.pki").get()
--   pki.ca            trusted root CA (PEM), the cafile clients are given
--   pki.untrusted_ca  a second root nobody trusts
--   pki.certs.good    { cert = leaf+intermediate chain, leaf = leaf only,
--                       key = key, intermediate = intermediate CA }
--
-- Every leaf is an EC P-256 key. Unless noted they are issued by an
-- intermediate CA under pki.ca, so cert files carry a two-certificate chain:
--   good           example.test (DNS SAN), valid now
--   good384        example.test, signed with ECDSA-SHA384
--   sha1           example.test, signed with ECDSA-SHA1 (too weak to verify)
--   expired        example.test, valid in 2000 only
--   notyet         example.test, valid from 2090
--   selfsigned     example.test, self-signed (no chain)
--   wrongname      other.test
--   wildcard       *.example.test
--   multidomain    example.test and *.example.test (a server with MUC,
--                  pubsub or components on subdomains)
--   partial        c*.example.test (a partial wildcard)
--   xmppaddr       only an id-on-xmppAddr SAN "example.test", CN "XMPP service"
--   cn_other_san   CN example.test but only an xmppAddr SAN "other.test"
--   untrusted      example.test issued directly by pki.untrusted_ca
local io, os, error, tostring, setmetatable = io, os, error, tostring, setmetatable

local M = {}
local cache

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Commands run without LD_PRELOAD: `make check` preloads the sanitizer
-- runtime for lua5.4, and its leak checker would abort the tools we run.
M.NO_PRELOAD = "unset LD_PRELOAD; "

local function sh(cmd)
  local f = assert(io.popen(M.NO_PRELOAD .. cmd .. " 2>&1", "r"))
  local out = f:read("*a")
  local ok, _, code = f:close()
  if not ok then error(("command failed (%s): %s\n%s"):format(tostring(code), cmd, out), 2) end
  return out
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A file's contents, or "" when it cannot be read (a log not written yet).
local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s or ""
end

local function read(path)
  assert(io.open(path, "r")):close()
  return read_file(path)
end

-- Date in the form `openssl ca -startdate` takes.
local function date(t) return os.date("!%Y%m%d%H%M%SZ", t) end

-- A minimal `openssl ca` setup in dir/name: config, index, serial.
local function new_ca_dir(dir, name)
  local d = dir .. "/" .. name
  sh("mkdir -p " .. q(d))
  write(d .. "/index.txt", "")
  write(d .. "/serial", "1000\n")
  write(d .. "/ca.cnf", ([[
[ ca ]
default_ca = this
[ this ]
dir = %s
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 3650
policy = anything
unique_subject = no
email_in_dn = no
copy_extensions = none
[ anything ]
commonName = supplied
]]):format(d))
  return d
end

local function keygen(path)
  sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " .. q(path))
end

-- A self-signed root CA in its own `openssl ca` directory.
local function root(dir, name, cn)
  local d = new_ca_dir(dir, name)
  keygen(d .. "/ca.key")
  sh(("openssl req -x509 -new -key %s -out %s -subj %s -days 3650 -sha256")
    :format(q(d .. "/ca.key"), q(d .. "/ca.pem"), q("/CN=" .. cn)))
  return d
end

-- Signs a new key's request with the CA in ca_dir. ext: the lines of the
-- certificate's extension section. opts: start, stop (dates), md.
local function issue(dir, ca_dir, name, cn, ext, opts)
  opts = opts or {}
  local key, csr, pem = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".csr",
    dir .. "/" .. name .. ".pem"
  local extfile = dir .. "/" .. name .. ".ext"
  keygen(key)
  write(extfile, "[ leaf ]\n" .. ext .. "\n")
  sh(("openssl req -new -key %s -out %s -subj %s"):format(q(key), q(csr), q("/CN=" .. cn)))
  local now = os.time()
  sh(("openssl ca -batch -notext -config %s -in %s -out %s -extfile %s -extensions leaf"
    .. " -startdate %s -enddate %s -md %s")
    :format(q(ca_dir .. "/ca.cnf"), q(csr), q(pem), q(extfile),
      opts.start or date(now - 86400), opts.stop or date(now + 3650 * 86400),
      opts.md or "sha256"))
  return pem, key
end

local LEAF = "basicConstraints = CA:false\nkeyUsage = critical, digitalSignature\n"
  .. "extendedKeyUsage = serverAuth, clientAuth\n"
local CA_EXT = "basicConstraints = critical, CA:true\nkeyUsage = critical, keyCertSign, cRLSign\n"
  .. "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
local XMPP_ADDR = "otherName:1.3.6.1.5.5.7.8.5;UTF8:"

local function build()
  local dir = sh("mktemp -d /tmp/lxmpp-pki.XXXXXX"):gsub("%s+$", "")
  local p = { dir = dir, certs = {} }
  -- removes the directory when the Lua state closes
  p.cleanup = setmetatable({}, { __gc = function() os.execute(M.NO_PRELOAD .. "rm -rf " .. q(dir)) end })

  local root_dir = root(dir, "root", "lxmpp Test Root CA")
  p.ca = root_dir .. "/ca.pem"
  local evil_dir = root(dir, "evil", "Untrusted Test CA")
  p.untrusted_ca = evil_dir .. "/ca.pem"

  local inter_dir = new_ca_dir(dir, "inter")
  local ipem = issue(dir, root_dir, "intermediate", "lxmpp Test Intermediate CA", CA_EXT)
  sh(("cp %s %s && cp %s %s"):format(q(ipem), q(inter_dir .. "/ca.pem"),
    q(dir .. "/intermediate.key"), q(inter_dir .. "/ca.key")))
  p.intermediate = ipem
  local intermediate_pem = read(ipem)

  local function leaf(name, cn, san, opts)
    local pem, key = issue(dir, inter_dir, name, cn, LEAF .. "subjectAltName = " .. san, opts)
    local chain = dir .. "/" .. name .. "-chain.pem"
    write(chain, read(pem) .. intermediate_pem)
    p.certs[name] = { cert = chain, leaf = pem, key = key, intermediate = ipem }
  end
  leaf("good", "example.test", "DNS:example.test")
  leaf("good384", "example.test", "DNS:example.test", { md = "sha384" })
  leaf("sha1", "example.test", "DNS:example.test", { md = "sha1" })
  leaf("expired", "example.test", "DNS:example.test",
    { start = "20000101000000Z", stop = "20010101000000Z" })
  leaf("notyet", "example.test", "DNS:example.test",
    { start = "20900101000000Z", stop = "20910101000000Z" })
  leaf("wrongname", "other.test", "DNS:other.test")
  leaf("wildcard", "*.example.test", "DNS:*.example.test")
  leaf("multidomain", "example.test", "DNS:example.test,DNS:*.example.test")
  leaf("partial", "c*.example.test", "DNS:c*.example.test")
  leaf("xmppaddr", "XMPP service", XMPP_ADDR .. "example.test")
  leaf("cn_other_san", "example.test", XMPP_ADDR .. "other.test")

  local spem, skey = dir .. "/selfsigned.pem", dir .. "/selfsigned.key"
  keygen(skey)
  sh(("openssl req -x509 -new -key %s -out %s -subj /CN=example.test -days 3650"
    .. " -addext subjectAltName=DNS:example.test"):format(q(skey), q(spem)))
  p.certs.selfsigned = { cert = spem, leaf = spem, key = skey }

  local upem, ukey = issue(dir, evil_dir, "untrusted", "example.test",
    LEAF .. "subjectAltName = DNS:example.test")
  p.certs.untrusted = { cert = upem, leaf = upem, key = ukey }
  return p
end

-- The PKI, made on first use.
function M.get()
  if not cache then cache = build() end
  return cache
end

-- Digest of a certificate's DER encoding ("sha256", "sha384"), as raw bytes.
function M.fingerprint(pem, md)
  return sh(("openssl x509 -in %s -outform DER | openssl dgst -%s -binary")
    :format(q(pem), md))
end

-- shared with the other spec supports that run commands
M.sh, M.q, M.read_file = sh, q, read_file

return M
