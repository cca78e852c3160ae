/*
 * idn.c - lxmpp.core bindings over GNU libidn: the RFC 6122 stringprep
 * profiles (nodeprep, resourceprep), nameprep, and IDNA2003 ToASCII /
 * ToUnicode for whole domains. lxmpp.jid builds JID preparation on these.
 *
 * Ownership: this file allocates nothing on the heap. Arguments are checked
 * (type, length <= LX_IDN_MAX_IN bytes, no NUL, strict UTF-8) and decoded
 * into fixed-size stack buffers before libidn is called; libidn works on
 * those buffers through its allocation-free interfaces (stringprep_4i,
 * idna_to_ascii_4i, idna_to_unicode_44i), which free their own temporaries
 * before returning. The result is re-encoded into a stack buffer and pushed
 * with lua_pushlstring only after libidn has returned, so an out-of-memory
 * error raised by Lua can neither leak memory nor unwind through libidn.
 * Every argument check that can raise runs before libidn is entered.
 *
 * Flags, and why:
 *  - "strict" (optional second argument, default false). Stringprep
 *    (RFC 3454 section 7) distinguishes stored strings, which must not
 *    contain code points unassigned in Unicode 3.2, from queries, which may.
 *    strict = true passes STRINGPREP_NO_UNASSIGNED (IDNA: no
 *    IDNA_ALLOW_UNASSIGNED) and is meant for identities being created and
 *    stored (registering an account, a room, a roster item). The default
 *    treats the string as a query, like Prosody's util.encodings and
 *    util.jid: stringprep is frozen at Unicode 3.2, so every character added
 *    since (emoji, newer letters) is "unassigned", and refusing them would
 *    leave lxmpp unable to address peers that use them (MUC nicknames are
 *    resourceparts). This is safe for comparisons: the unassigned check only
 *    prohibits, so whenever the strict form exists it is byte-for-byte the
 *    non-strict form, and both are deterministic.
 *  - to_ascii / to_unicode always use IDNA_USE_STD3_ASCII_RULES: a JID
 *    domainpart must be a host name (RFC 7622 section 3.2), and without
 *    STD3 the ASCII space, '@', '/', '<', '_' and other non-LDH characters
 *    (which nameprep leaves alone) would pass as domain characters.
 */

#include <stdint.h>
#include <string.h>

#include <idna.h>
#include <stringprep.h>

#include "core.h"

/* Longest argument accepted, in bytes: a JID part (RFC 7622 section 3.1). */
#define LX_IDN_MAX_IN 1023
/* Code points of the stringprep work buffer. Mapping and NFKC may expand the
 * input; a result that does not fit is refused, not truncated. */
#define LX_IDN_WORK 4096
/* Longest result returned, in bytes. Anything longer is not a usable JID
 * part or domain anyway; the caller checks the real limits. */
#define LX_IDN_MAX_OUT (4 * LX_IDN_MAX_IN)

/* Pushes nil and a message (a static string: pushing it cannot leak). */
static int fail(lua_State *L, const char *message) {
  lua_pushnil(L);
  lua_pushstring(L, message);
  return 2;
}

/* The optional "strict" argument: absent or nil means false; anything but a
 * boolean is misuse and raises. */
static int opt_strict(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TBOOLEAN);
  return lua_toboolean(L, idx);
}

/* Decodes strict UTF-8 (no overlong forms, surrogates, code points above
 * U+10FFFF, truncated sequences or NUL) into out, which must have room for
 * len code points. Returns NULL on success, else a static message. */
static const char *decode_utf8(const char *s, size_t len, uint32_t *out,
                               size_t *n) {
  size_t i = 0, k = 0;
  while (i < len) {
    unsigned int c = (unsigned char)s[i];
    uint32_t cp, min;
    size_t need, j;
    if (c < 0x80) {
      cp = c;
      need = 0;
      min = 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
      cp = c & 0x1F;
      need = 1;
      min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      cp = c & 0x0F;
      need = 2;
      min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      cp = c & 0x07;
      need = 3;
      min = 0x10000;
    } else {
      return "invalid UTF-8";
    }
    if (need > len - i - 1)
      return "invalid UTF-8";
    for (j = 1; j <= need; j++) {
      unsigned int cc = (unsigned char)s[i + j];
      if ((cc & 0xC0) != 0x80)
        return "invalid UTF-8";
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return "invalid UTF-8";
    if (cp == 0)
      return "contains a NUL byte";
    out[k++] = cp;
    i += need + 1;
  }
  *n = k;
  return NULL;
}

/* Appends the UTF-8 form of n code points to out[*pos .. cap). Returns 0, or
 * -1 if it does not fit or a code point is not a Unicode scalar value. */
static int encode_utf8(const uint32_t *in, size_t n, char *out, size_t cap,
                       size_t *pos) {
  size_t i, o = *pos;
  for (i = 0; i < n; i++) {
    uint32_t cp = in[i];
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return -1;
    if (cp < 0x80) {
      if (cap - o < 1)
        return -1;
      out[o++] = (char)cp;
    } else if (cp < 0x800) {
      if (cap - o < 2)
        return -1;
      out[o++] = (char)(0xC0 | (cp >> 6));
      out[o++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      if (cap - o < 3)
        return -1;
      out[o++] = (char)(0xE0 | (cp >> 12));
      out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      out[o++] = (char)(0x80 | (cp & 0x3F));
    } else {
      if (cap - o < 4)
        return -1;
      out[o++] = (char)(0xF0 | (cp >> 18));
      out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
      out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      out[o++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  *pos = o;
  return 0;
}

/* Checks argument idx (a string, else raises) and decodes it into out
 * (room for LX_IDN_MAX_IN code points). Returns NULL, or a static message
 * for input that is refused without calling libidn. */
static const char *check_arg(lua_State *L, int idx, uint32_t *out, size_t *n) {
  size_t len;
  const char *s;
  luaL_checktype(L, idx, LUA_TSTRING);
  s = lua_tolstring(L, idx, &len);
  if (len > LX_IDN_MAX_IN)
    return "too long";
  if (memchr(s, '\0', len) != NULL)
    return "contains a NUL byte";
  return decode_utf8(s, len, out, n);
}

/* The IDNA label separators (RFC 3490 section 3.1). */
static int is_dot(uint32_t cp) {
  return cp == 0x002E || cp == 0x3002 || cp == 0xFF0E || cp == 0xFF61;
}

/* prep(s [, strict]) -> prepared string | nil, message */
static int prep(lua_State *L, const Stringprep_profile *profile) {
  uint32_t work[LX_IDN_WORK];
  char out[LX_IDN_MAX_OUT];
  size_t n = 0, outlen = 0;
  int rc, strict = opt_strict(L, 2);
  const char *err = check_arg(L, 1, work, &n);
  if (err != NULL)
    return fail(L, err);
  rc = stringprep_4i(work, &n, LX_IDN_WORK,
                     strict ? STRINGPREP_NO_UNASSIGNED : 0, profile);
  if (rc == STRINGPREP_TOO_SMALL_BUFFER)
    return fail(L, "result too long");
  if (rc != STRINGPREP_OK)
    return fail(L, stringprep_strerror((Stringprep_rc)rc));
  if (encode_utf8(work, n, out, sizeof out, &outlen) != 0)
    return fail(L, "result too long");
  lua_pushlstring(L, out, outlen);
  return 1;
}

/* core.nodeprep(s [, strict]): RFC 6122 Nodeprep (the localpart). */
static int l_nodeprep(lua_State *L) {
  return prep(L, stringprep_xmpp_nodeprep);
}

/* core.nameprep(s [, strict]): RFC 3491 Nameprep (the domainpart). */
static int l_nameprep(lua_State *L) {
  return prep(L, stringprep_nameprep);
}

/* core.resourceprep(s [, strict]): RFC 6122 Resourceprep (the resourcepart). */
static int l_resourceprep(lua_State *L) {
  return prep(L, stringprep_xmpp_resourceprep);
}

static int idna_flags(int strict) {
  return IDNA_USE_STD3_ASCII_RULES | (strict ? 0 : IDNA_ALLOW_UNASSIGNED);
}

/* core.to_ascii(domain [, strict]) -> ASCII domain | nil, message
 * IDNA2003 ToASCII of every label, with STD3 rules. Labels are separated by
 * any RFC 3490 dot and joined with "."; an empty label (including the root
 * label of "example.com.": strip it first) is refused, as is a label that is
 * not 1..63 ASCII characters once converted. */
static int l_to_ascii(lua_State *L) {
  uint32_t in[LX_IDN_MAX_IN];
  char out[LX_IDN_MAX_OUT];
  char label[65]; /* 63 characters, NUL, and a spare NUL (see below) */
  size_t n = 0, start = 0, o = 0;
  int flags = idna_flags(opt_strict(L, 2));
  const char *err = check_arg(L, 1, in, &n);
  if (err != NULL)
    return fail(L, err);
  for (;;) {
    size_t end = start, llen, i;
    int rc, ascii = 1;
    while (end < n && !is_dot(in[end]))
      end++;
    if (end == start)
      return fail(L, "empty label");
    for (i = start; i < end; i++)
      if (in[i] > 0x7F)
        ascii = 0;
    /* libidn < 1.33 left an over-long ASCII label unterminated; refuse it
     * here, and keep a zeroed spare byte so strlen below stays in bounds. */
    if (ascii && end - start > 63)
      return fail(L, "label too long");
    memset(label, 0, sizeof label);
    rc = idna_to_ascii_4i(in + start, end - start, label, flags);
    if (rc != IDNA_SUCCESS)
      return fail(L, idna_strerror((Idna_rc)rc));
    llen = strlen(label);
    if (llen < 1 || llen > 63)
      return fail(L, "label too long");
    if (sizeof out - o < llen + 1)
      return fail(L, "result too long");
    if (o > 0)
      out[o++] = '.';
    memcpy(out + o, label, llen);
    o += llen;
    if (end == n)
      break;
    start = end + 1;
  }
  lua_pushlstring(L, out, o);
  return 1;
}

/* core.to_unicode(domain [, strict]) -> Unicode domain | nil, message
 * IDNA2003 ToUnicode of every label (STD3 rules), joined with ".". Labels
 * without the ACE prefix come back unchanged. Unlike RFC 3490 ToUnicode,
 * which returns a label it cannot convert as it was, this fails for such a
 * label, so that a bogus A-label ("xn--" plus garbage) cannot pass as a
 * domain. It is not a validator otherwise: use to_ascii for that. */
static int l_to_unicode(lua_State *L) {
  uint32_t in[LX_IDN_MAX_IN];
  uint32_t label[LX_IDN_MAX_IN + 1];
  char out[LX_IDN_MAX_OUT];
  size_t n = 0, start = 0, o = 0;
  int flags = idna_flags(opt_strict(L, 2));
  const char *err = check_arg(L, 1, in, &n);
  if (err != NULL)
    return fail(L, err);
  for (;;) {
    size_t end = start, llen = sizeof label / sizeof label[0];
    int rc;
    while (end < n && !is_dot(in[end]))
      end++;
    if (end == start)
      return fail(L, "empty label");
    /* Output never exceeds the room given: the punycode decoder is bounded
     * by llen, and on failure libidn copies back the (shorter) input. */
    rc = idna_to_unicode_44i(in + start, end - start, label, &llen, flags);
    if (rc != IDNA_SUCCESS && rc != IDNA_NO_ACE_PREFIX)
      return fail(L, idna_strerror((Idna_rc)rc));
    if (llen > LX_IDN_MAX_IN)
      return fail(L, "result too long");
    if (o > 0) {
      if (sizeof out - o < 1)
        return fail(L, "result too long");
      out[o++] = '.';
    }
    if (encode_utf8(label, llen, out, sizeof out, &o) != 0)
      return fail(L, "result too long");
    if (end == n)
      break;
    start = end + 1;
  }
  lua_pushlstring(L, out, o);
  return 1;
}

static const luaL_Reg idn_funcs[] = {
  {"nodeprep", l_nodeprep},
  {"nameprep", l_nameprep},
  {"resourceprep", l_resourceprep},
  {"to_ascii", l_to_ascii},
  {"to_unicode", l_to_unicode},
  {NULL, NULL}
};

/* Adds the functions above to the module table on top of the stack
 * (stack effect: none). They keep no state. */
void lx_open_idn(lua_State *L) {
  luaL_setfuncs(L, idn_funcs, 0);
}
