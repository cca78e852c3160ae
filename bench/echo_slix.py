#!/usr/bin/python3
"""bench/echo_slix.py: one client of bench/echo.lua, written with slixmpp:
the echo bot or the pinger. bench/echo_lx.lua is the same program with lxmpp;
the two speak the same little protocol and print the same result line.

  /usr/bin/python3 bench/echo_slix.py echo JID PASSWORD PORT CAFILE
  /usr/bin/python3 bench/echo_slix.py ping JID PASSWORD PORT CAFILE N ECHO_JID

Debian's python3-slixmpp (1.8.x), hence /usr/bin/python3: another python3
on PATH may not see Debian's packages.

Both connect to 127.0.0.1:PORT with STARTTLS required (force_starttls), the
server's certificate verified against CAFILE (ca_certs: slixmpp 1.8 loads it
into its ssl_context with load_verify_locations, CERT_REQUIRED, host name
checked), SCRAM (the strongest mechanism offered, never PLAIN), send initial
presence and print "online".

echo  echoes every chat message back to its sender, as slixmpp's own echo
      example does (msg.reply(body).send()). "bench:start" (not echoed)
      starts its CPU count, "bench:quit" stops it; then it prints its result
      line and disconnects.
ping  sends "bench:warmup" until it comes back (the echo bot is there), then
      "bench:start", then N messages "<i> <text>" back to back without
      waiting for echoes (pipelined; slixmpp queues them and writes them as
      fast as its send loop runs). It counts the echoes, each i exactly once,
      until all N are back, then sends "bench:quit", prints its result line
      and disconnects.

The result line: "result lib=slixmpp role=ping n=N wall=S cpu=S cpu_total=S
...": cpu is user+system CPU seconds of this process
(resource.getrusage(RUSAGE_SELF)) from "bench:start" to the last echo (ping)
or to "bench:quit" (echo); cpu_total is the whole process, interpreter
start-up, imports and login included; wall (ping only) is from just before
the first of the N messages to the arrival of the last echo
(time.monotonic). Any failure: a message on stderr, exit status 1.
"""

import asyncio
import gc
import resource
import sys
import time

ROLE = sys.argv[1] if len(sys.argv) > 1 else None
TIMEOUT = 60    # seconds without progress before a wait fails
# the text after the number in every message (same in echo_lx.lua)
TEXT = "the quick brown fox jumps over the lazy dog, then naps by the river bank"


def die(msg):
    sys.stderr.write("bench/echo_slix.py %s: %s\n" % (ROLE, msg))
    sys.stderr.flush()
    sys.exit(1)


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


if ROLE not in ("echo", "ping") or len(sys.argv) < 6 or (ROLE == "ping" and len(sys.argv) < 8):
    die("usage: echo_slix.py echo JID PASSWORD PORT CAFILE | ping JID PASSWORD PORT CAFILE N ECHO_JID")

try:
    import slixmpp
except ImportError as e:
    die("cannot import slixmpp (Debian package python3-slixmpp, run with /usr/bin/python3): %s" % e)

JID, PASSWORD, PORT, CAFILE = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
N = int(sys.argv[6]) if ROLE == "ping" else 0
PEER = sys.argv[7] if ROLE == "ping" else None
if ROLE == "ping" and N < 1:
    die("N must be >= 1")


class Client(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(JID, PASSWORD)
        self.ca_certs = CAFILE
        self['feature_mechanisms'].unencrypted_plain = False
        self.failure = None
        self.closing = False
        self.result = {}
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.message)
        for ev in ("connection_failed", "failed_auth", "ssl_invalid_chain", "stream_error"):
            self.add_event_handler(ev, lambda e, ev=ev: self.fail("%s: %s" % (ev, e)))
        self.add_event_handler("disconnected", self.on_disconnected)

    def fail(self, msg):
        if self.failure is None:
            self.failure = msg
        self.closing = True
        self.disconnect(wait=0)

    def on_disconnected(self, reason):
        if not self.closing and self.failure is None:
            self.failure = "disconnected: %s" % (reason,)
        self.loop.stop()

    def online(self):
        self.send_presence()
        mech = self['feature_mechanisms'].mech
        ssl = self.transport.get_extra_info("ssl_object") if self.transport else None
        print("online %s %s %s %s" % (self.boundjid, mech.name if mech else "?",
                                      ssl.version() if ssl else "none", ssl.cipher()[0] if ssl else "none"),
              flush=True)

    def finish(self, **result):
        result["cpu_total"] = cpu()
        self.result = result
        self.closing = True
        self.disconnect()


class Echo(Client):
    counting = False
    echoed = 0
    cpu0 = None

    async def start(self, event):
        self.online()

    def message(self, msg):
        if msg['type'] == 'error':
            return
        body = msg['body']
        if not body:
            return
        if body == "bench:start":
            self.counting, self.echoed, self.cpu0 = True, 0, cpu()
        elif body == "bench:quit":
            cpu1 = cpu()
            if self.cpu0 is None:
                return self.fail("bench:quit came before bench:start")
            self.finish(role="echo", echoed=self.echoed, cpu=cpu1 - self.cpu0, stalls=0)
        else:
            if self.counting:
                self.echoed += 1
            msg.reply(body).send()


class Ping(Client):
    def __init__(self):
        super().__init__()
        self.seen = bytearray(N + 1)
        self.got = 0
        self.warm = False
        self.waiter = None
        self.t1 = self.cpu1 = None

    def kick(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(True)

    def fail(self, msg):
        super().fail(msg)
        self.kick()

    async def bench_wait(self, pred, what, progress=lambda: 0, max_wait=1.0):
        last, moved_at = progress(), time.monotonic()
        while not pred():
            if self.failure:
                return False
            p = progress()
            if p != last:
                last, moved_at = p, time.monotonic()
            if time.monotonic() - moved_at > TIMEOUT:
                self.fail("%s: nothing happened for %d s" % (what, TIMEOUT))
                return False
            self.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, max_wait)
            except asyncio.TimeoutError:
                pass
            self.waiter = None
        return self.failure is None

    def message(self, msg):
        body = msg['body']
        if not body:
            return
        if msg['type'] == 'error':
            return self.fail("error message: %s" % msg)
        head = body.split(" ", 1)[0]
        if head.isdigit():
            i = int(head)
            if i < 1 or i > N:
                return self.fail("echo of an unknown message: " + body)
            if self.seen[i]:
                return self.fail("echo of message %d arrived twice" % i)
            self.seen[i] = 1
            self.got += 1
            if self.got == N:
                self.t1, self.cpu1 = time.monotonic(), cpu()
                self.kick()
        elif body == "bench:warmup":
            self.warm = True
            self.kick()
        else:
            self.fail("unexpected message: " + body)

    async def start(self, event):
        self.online()
        # the echo bot answers
        for _ in range(20):
            self.send_message(mto=PEER, mbody="bench:warmup", mtype="chat")
            deadline = time.monotonic() + 1
            if not await self.bench_wait(lambda: self.warm or time.monotonic() > deadline, "warm-up",
                                         max_wait=0.2):
                return
            if self.warm:
                break
        if not self.warm:
            return self.fail("the echo bot %s does not answer" % PEER)

        # the timed part
        gc.collect()
        self.send_message(mto=PEER, mbody="bench:start", mtype="chat")
        t0, cpu0 = time.monotonic(), cpu()
        for i in range(1, N + 1):
            self.send_message(mto=PEER, mbody="%d %s" % (i, TEXT), mtype="chat")
        if not await self.bench_wait(lambda: self.got == N, "waiting for the echoes",
                                     progress=lambda: self.got, max_wait=5.0):
            return
        self.send_message(mto=PEER, mbody="bench:quit", mtype="chat")
        self.finish(role="ping", n=N, echoes=self.got, dups=0,
                    wall=self.t1 - t0, cpu=self.cpu1 - cpu0, stalls=0)


def main():
    xmpp = Echo() if ROLE == "echo" else Ping()
    xmpp.connect(address=("127.0.0.1", PORT), use_ssl=False, force_starttls=True, disable_starttls=False)
    xmpp.loop.run_forever()      # until on_disconnected stops it
    if xmpp.failure:
        die(xmpp.failure)
    if not xmpp.result:
        die("ended without a result")
    parts = ["result", "lib=slixmpp"]
    for k in sorted(xmpp.result):
        v = xmpp.result[k]
        parts.append("%s=%s" % (k, ("%.6f" % v) if isinstance(v, float) else v))
    print(" ".join(parts), flush=True)


if __name__ == "__main__":
    main()
