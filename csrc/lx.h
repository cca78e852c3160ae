/*
 * lx.h - what every C file of lxmpp.core includes first: the symbol
 * visibility policy (no hidden state: the shared object exports only
 * luaopen_lxmpp_core).
 *
 * The Makefile builds with -fvisibility=hidden, but the rock
 * (lxmpp-scm-1.rockspec, luarocks' builtin backend) compiles with plain
 * "-O2 -fPIC", where every non-static function would be exported and could
 * clash with another module's symbols in the same process. So each header of
 * csrc/ wraps its own declarations in LX_HIDDEN_BEGIN / LX_HIDDEN_END: a
 * definition takes the visibility of its earlier declaration, and
 * -Wmissing-prototypes guarantees every non-static definition has one.
 * Only luaopen_lxmpp_core is marked LX_API. The pragma must not wrap system
 * headers: a library function declared hidden cannot be linked against.
 * spec/exports_spec.lua checks both builds.
 */
#ifndef LXMPP_LX_H
#define LXMPP_LX_H

#if defined(__GNUC__)
#define LX_API __attribute__((visibility("default")))
#define LX_HIDDEN_BEGIN _Pragma("GCC visibility push(hidden)")
#define LX_HIDDEN_END _Pragma("GCC visibility pop")
#else
#define LX_API
#define LX_HIDDEN_BEGIN
#define LX_HIDDEN_END
#endif

#endif
