/*
 * oom_host.c - a Lua host whose allocator can be told to fail, for
 * spec/net_spec.lua: what the C core does when building an event for Lua
 * runs out of memory inside a libuv callback. The spec compiles it into
 * build/ against the Lua the suite runs under.
 *
 *   oom_host script.lua [args...]
 *
 * runs script.lua with the arguments in `arg` and one more global:
 * fail_allocations(on): from now on every allocation that would grow
 * memory fails (frees and shrinks still work, as Lua requires), until
 * fail_allocations(false). Exit status 0, or 1 with the script's error on
 * stderr.
 */
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>

static int failing;

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  /* (for a new block, osize is a type tag, not a size) */
  if (failing && (ptr == NULL || nsize > osize)) return NULL;
  return realloc(ptr, nsize);
}

static int l_fail_allocations(lua_State *L) {
  failing = lua_toboolean(L, 1);
  return 0;
}

int main(int argc, char **argv) {
  lua_State *L;
  int i, rc = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args...]\n", argv[0]);
    return 2;
  }
  L = lua_newstate(alloc, NULL);
  if (!L) {
    fprintf(stderr, "oom_host: cannot create a Lua state\n");
    return 2;
  }
  luaL_openlibs(L);
  lua_pushcfunction(L, l_fail_allocations);
  lua_setglobal(L, "fail_allocations");
  lua_newtable(L);
  for (i = 2; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfile(L, argv[1]) != 0 || lua_pcall(L, 0, 0, 0) != 0) {
    failing = 0;
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    rc = 1;
  }
  failing = 0;
  lua_close(L);
  return rc;
}
