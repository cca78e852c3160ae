#!/usr/bin/python3
"""A TCP proxy on loopback that injects faults, for the reliability specs.

    faultproxy.py --listen PORT --target HOST:PORT --seed N --status FILE

It forwards bytes both ways between a client and the target. Commands come
one per line on stdin:

    cut MIN MAX     each connection accepted from now on is cut (both sides
                    reset) after a number of bytes drawn in [MIN, MAX],
                    counted over both directions: the cut falls anywhere,
                    in the middle of a stanza or a TLS record included.
                    "cut 0 0" turns cutting off.
    cutnow          reset every open connection now
    stall           open connections stop forwarding (a half-open link: the
                    sockets stay open, nothing gets through)
    refuse SECONDS  stop listening for that long (connections are refused)
    down SECONDS    cutnow, then refuse
    quit

The thresholds come from random.Random(seed) in the order connections are
accepted, so a run with the same seed cuts at the same byte offsets. After
every event the counters are written (atomically) to the status file as
`key=value` lines: accepted, cuts, stalls, refusals, open, listening.
"""

import argparse
import asyncio
import os
import random
import sys


class Proxy:
    def __init__(self, listen_port, target, seed, status):
        self.listen_port = listen_port
        self.target_host, self.target_port = target
        self.rng = random.Random(seed)
        self.status_path = status
        self.cut_range = (0, 0)
        self.server = None
        self.links = set()
        self.stats = {"accepted": 0, "cuts": 0, "stalls": 0, "refusals": 0}
        self.refuse_task = None

    def write_status(self):
        lines = ["%s=%d" % kv for kv in sorted(self.stats.items())]
        lines.append("open=%d" % len(self.links))
        lines.append("listening=%d" % (1 if self.server else 0))
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.status_path)

    async def listen(self):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Downstream(self), "127.0.0.1", self.listen_port, reuse_address=True)
        self.write_status()

    def stop_listening(self):
        if self.server:
            self.server.close()
            self.server = None

    def draw_limit(self):
        lo, hi = self.cut_range
        if hi <= 0:
            return None
        return self.rng.randint(lo, hi)

    async def refuse(self, seconds):
        self.stats["refusals"] += 1
        self.stop_listening()
        self.write_status()
        await asyncio.sleep(seconds)
        await self.listen()

    def command(self, line):
        parts = line.split()
        if not parts:
            return True
        cmd, args = parts[0], parts[1:]
        if cmd == "cut":
            self.cut_range = (int(args[0]), int(args[1]))
        elif cmd == "cutnow":
            for link in list(self.links):
                link.cut()
        elif cmd == "stall":
            for link in list(self.links):
                link.stall()
        elif cmd in ("refuse", "down"):
            if cmd == "down":
                for link in list(self.links):
                    link.cut()
            if self.refuse_task:
                self.refuse_task.cancel()
            self.refuse_task = asyncio.ensure_future(self.refuse(float(args[0])))
        elif cmd == "quit":
            return False
        else:
            print("faultproxy: unknown command %r" % line, file=sys.stderr)
        self.write_status()
        return True


class Link:
    """One proxied connection: the client side and the target side."""

    def __init__(self, proxy, down):
        self.proxy = proxy
        self.down = down
        self.up = None
        self.pending = []              # client bytes before the target answers
        self.limit = proxy.draw_limit()
        self.count = 0
        self.stalled = False
        self.done = False

    def forward(self, data, to):
        if self.done or self.stalled:
            return
        if self.limit is not None:
            room = self.limit - self.count
            if len(data) >= room:
                if room > 0 and to is not None:
                    to.write(data[:room])
                self.cut()
                return
        self.count += len(data)
        if to is None:
            self.pending.append(data)
        else:
            to.write(data)

    def stall(self):
        if self.done or self.stalled:
            return
        self.stalled = True
        self.proxy.stats["stalls"] += 1
        for t in (self.down, self.up):
            if t is not None and not t.is_closing():
                t.pause_reading()

    def cut(self):
        if self.done:
            return
        self.proxy.stats["cuts"] += 1
        self.close(abort=True)
        self.proxy.write_status()

    def close(self, abort=False):
        if self.done:
            return
        self.done = True
        self.proxy.links.discard(self)
        for t in (self.down, self.up):
            if t is not None:
                t.abort() if abort else t.close()


class Downstream(asyncio.Protocol):
    def __init__(self, proxy):
        self.proxy = proxy
        self.link = None

    def connection_made(self, transport):
        proxy = self.proxy
        proxy.stats["accepted"] += 1
        self.link = Link(proxy, transport)
        proxy.links.add(self.link)
        proxy.write_status()
        asyncio.ensure_future(self.connect_up())

    async def connect_up(self):
        link = self.link
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: Upstream(link), self.proxy.target_host, self.proxy.target_port)
        except OSError:
            link.close()
            return
        if link.done:
            transport.abort()
            return
        link.up = transport
        if link.stalled:
            transport.pause_reading()
        for data in link.pending:
            transport.write(data)
        link.pending = []

    def data_received(self, data):
        self.link.forward(data, self.link.up)

    def connection_lost(self, exc):
        self.link.close()


class Upstream(asyncio.Protocol):
    def __init__(self, link):
        self.link = link

    def data_received(self, data):
        self.link.forward(data, self.link.down)

    def connection_lost(self, exc):
        self.link.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--status", required=True)
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    proxy = Proxy(a.listen, (host, int(port)), a.seed, a.status)
    await proxy.listen()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line or not proxy.command(line.decode()):
            break
    proxy.stop_listening()
    for link in list(proxy.links):
        link.close(abort=True)


if __name__ == "__main__":
    asyncio.run(main())
