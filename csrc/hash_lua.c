/*
 * hash_lua.c - small OpenSSL helpers for the Lua layer:
 *
 *   core.sha1_hex(s)    hex SHA-1 (XEP-0114 handshakes, XEP-0115 needs SHA-1)
 *   core.hash(name, s)  raw digest: "sha1", "sha256", "sha512"
 *   core.random(n)      n cryptographically random bytes
 *   core.const_eq(a, b) constant-time equality of secrets
 *   core.hmac(name, key, s) raw HMAC (RFC 2104) with "sha1", "sha256", "sha512"
 */
#include "lx.h"
#include "core.h"

#include <limits.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

static int digest(lua_State *L, const EVP_MD *md, const char *s, size_t len,
                  unsigned char *out, unsigned *outlen) {
  if (!EVP_Digest(s, len, out, outlen, md, NULL))
    return luaL_error(L, "digest failed");
  return 1;
}

static int l_sha1_hex(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char d[EVP_MAX_MD_SIZE];
  char hex[2 * EVP_MAX_MD_SIZE];
  unsigned n, i;
  static const char digits[] = "0123456789abcdef";
  digest(L, EVP_sha1(), s, len, d, &n);
  for (i = 0; i < n; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  lua_pushlstring(L, hex, 2 * n);
  return 1;
}

/* The digest named by argument arg: "sha1", "sha256" or "sha512". */
static const EVP_MD *check_md(lua_State *L, int arg) {
  static const char *const names[] = {"sha1", "sha256", "sha512", NULL};
  int which = luaL_checkoption(L, arg, NULL, names);
  return which == 0 ? EVP_sha1() : which == 1 ? EVP_sha256() : EVP_sha512();
}

static int l_hash(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n;
  digest(L, md, s, len, d, &n);
  lua_pushlstring(L, (const char *)d, n);
  return 1;
}

static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  unsigned char buf[256];
  luaL_argcheck(L, n >= 0 && n <= (lua_Integer)sizeof buf, 1, "0 to 256 bytes");
  if (RAND_bytes(buf, (int)n) != 1) return luaL_error(L, "no randomness available");
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

/* Compares in time that depends only on the lengths, never on where two
 * secrets differ. */
static int l_const_eq(lua_State *L) {
  size_t la, lb;
  const char *a = luaL_checklstring(L, 1, &la);
  const char *b = luaL_checklstring(L, 2, &lb);
  lua_pushboolean(L, la == lb && CRYPTO_memcmp(a, b, la) == 0);
  return 1;
}

/* HMAC of s under key (the XEP-0484 HT mechanisms' proofs, among others). */
static int l_hmac(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t klen, len;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *s = luaL_checklstring(L, 3, &len);
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  luaL_argcheck(L, klen <= INT_MAX, 2, "key too long");
  if (!HMAC(md, key, (int)klen, (const unsigned char *)s, len, d, &n))
    return luaL_error(L, "HMAC failed");
  lua_pushlstring(L, (const char *)d, n);
  return 1;
}

void lx_open_hash(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sha1_hex", l_sha1_hex}, {"hash", l_hash}, {"random", l_random},
    {"const_eq", l_const_eq}, {"hmac", l_hmac}, {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
