-- How much slower than native the suite runs: Valgrind's memcheck (CI's
-- `make valgrind` stage) runs everything tens of times slower, so specs
-- that measure time or push thousands of stanzas scale by this factor.
-- (The sanitizer build of `make check` is fast enough to need none.)
local preload = os.getenv("LD_PRELOAD") or ""
return {
  valgrind = preload:find("vgpreload", 1, true) ~= nil,
  factor = preload:find("vgpreload", 1, true) and 10 or 1,
}
