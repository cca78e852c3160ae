/*
 * file.c - files only their owner may read, for the secrets lxmpp keeps on
 * disk (the client's saved state with its FAST token, lxmpp.state_file; the
 * server's SQLite file, lxmpp.server.storage_sqlite).
 *
 *   core.write_private(path, bytes [, how]) -> true | nil, message, errno name
 *       how "new" (the default): creates path, which must not exist, with
 *       mode 0600 whatever the umask (the umask can only take bits away)
 *       and writes bytes; on failure nothing is left behind.
 *       how "append": creates path with mode 0600 when it is missing,
 *       else leaves its mode alone, and appends bytes ("" only creates).
 *       Never follows a symbolic link at path (O_NOFOLLOW).
 *
 * Without it the Lua side had to set the mode through a shell (`umask 077`),
 * a fork and exec for each write of a state that changes with every stanza.
 */
#include "lx.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#ifndef O_NOFOLLOW
#define O_NOFOLLOW 0
#endif
#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static int fail(lua_State *L, const char *what, const char *path, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "cannot %s %s: %s", what, path, strerror(err));
  lua_pushstring(L, err == EEXIST ? "EEXIST" : err == ENOENT ? "ENOENT" :
                    err == EACCES ? "EACCES" : err == ELOOP ? "ELOOP" : "EIO");
  return 3;
}

static int l_write_private(lua_State *L) {
  static const char *const hows[] = {"new", "append", NULL};
  const char *path = luaL_checkstring(L, 1);
  size_t len, off = 0;
  const char *bytes = luaL_checklstring(L, 2, &len);
  int append = luaL_checkoption(L, 3, "new", hows) == 1;
  int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (append ? O_APPEND : O_EXCL);
  int fd, err;
  do fd = open(path, flags, S_IRUSR | S_IWUSR); while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail(L, "create", path, errno);
  while (off < len) {
    ssize_t n = write(fd, bytes + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      close(fd);
      if (!append) unlink(path);            /* ours, made just now */
      return fail(L, "write", path, err);
    }
    off += (size_t)n;
  }
  if (close(fd) != 0 && errno != EINTR) {
    err = errno;
    if (!append) unlink(path);
    return fail(L, "write", path, err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

void lx_open_file(lua_State *L) {
  static const luaL_Reg fns[] = {{"write_private", l_write_private}, {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
