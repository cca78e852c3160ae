#!/usr/bin/python3
"""dnsd.py - a tiny authoritative DNS responder for the specs (standard library only).

    dnsd.py PORT ZONE.json [--log FILE] [--silent] [--bind ADDR]

Listens on 127.0.0.1:PORT (--bind: another loopback address, e.g. 127.0.3.9
port 53 for a resolver that only knows port 53) over UDP and TCP (PORT 0:
picks one) and prints the
port on the first stdout line, then "pid N" on the second. ZONE.json maps
names to what they hold:

    {"_xmpp-client._tcp.example.test": {"SRV": [[prio, weight, port, "target"]]},
     "xmpp1.example.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
     "missing.test": "NXDOMAIN", "broken.test": "SERVFAIL", "slow.test": "DROP"}

A name not in the zone is NXDOMAIN; a name holding no record of the asked type
answers NOERROR with no records. "DROP" never answers (a timeout). Over UDP an
answer longer than 512 bytes is cut off with the TC bit set, so the client
asks again over TCP. --silent: answers nothing at all. --log FILE: appends
"NAME TYPE" for every query received (specs count them).

Exits on SIGTERM, when stdin is a pipe and closes, or when its parent dies.
"""
import ipaddress
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys

TYPES = {"A": 1, "AAAA": 28, "SRV": 33}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN = 0, 1, 2, 3
UDP_LIMIT = 512


def encode_name(name):
    """Uncompressed wire form of a domain name ("." or "" is the root)."""
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError("label too long: " + label)
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def parse_question(msg):
    """(id, flags, qname, qtype, qclass, end of question) of a query."""
    if len(msg) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount != 1:
        raise ValueError("expected one question")
    labels, pos = [], 12
    while True:
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed question")
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return qid, flags, ".".join(labels), qtype, qclass, pos + 4


def rdata(rtype, value):
    if rtype == "A":
        return ipaddress.IPv4Address(value).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(value).packed
    prio, weight, port, target = value
    return struct.pack("!HHH", prio, weight, port) + encode_name(target)


class Server:
    def __init__(self, zone, log, silent):
        self.zone = {k.lower().rstrip("."): v for k, v in zone.items()}
        self.log = log
        self.silent = silent

    def answer(self, msg, limit):
        """The response to one query, or None to stay silent."""
        try:
            qid, flags, qname, qtype, qclass, end = parse_question(msg)
        except (ValueError, IndexError, struct.error):
            if len(msg) < 2:
                return None
            return msg[:2] + struct.pack("!HHHHH", 0x8000 | FORMERR, 0, 0, 0, 0)
        if self.log:
            with open(self.log, "a") as f:
                f.write("%s %s\n" % (qname, TYPE_NAMES.get(qtype, qtype)))
        entry = self.zone.get(qname.lower().rstrip("."), "NXDOMAIN")
        if self.silent or entry == "DROP":
            return None
        rcode, records = NOERROR, []
        if entry == "NXDOMAIN":
            rcode = NXDOMAIN
        elif entry == "SERVFAIL":
            rcode = SERVFAIL
        elif qclass == 1:
            name = encode_name(qname)
            for rtype, values in entry.items():
                if TYPES.get(rtype) == qtype:
                    for v in values:
                        data = rdata(rtype, v)
                        records.append(name + struct.pack("!HHIH", qtype, 1, 60, len(data)) + data)
        question = msg[12:end]
        # QR, opcode and RD copied, AA
        rflags = 0x8000 | (flags & 0x7900) | 0x0400 | rcode
        while True:
            head = struct.pack("!HHHHHH", qid, rflags, 1, len(records), 0, 0)
            out = head + question + b"".join(records)
            if len(out) <= limit:
                return out
            rflags |= 0x0200  # TC: cut the answer, the client retries over TCP
            records = []


def main():
    args = sys.argv[1:]
    log, silent, bind = None, False, "127.0.0.1"
    if "--silent" in args:
        args.remove("--silent")
        silent = True
    if "--log" in args:
        i = args.index("--log")
        log = args[i + 1]
        del args[i:i + 2]
    if "--bind" in args:
        i = args.index("--bind")
        bind = args[i + 1]
        del args[i:i + 2]
        if not ipaddress.IPv4Address(bind).is_loopback:
            sys.exit("--bind: loopback addresses only")
    if len(args) != 2:
        sys.exit(__doc__)
    port, zone_path = int(args[0]), args[1]
    with open(zone_path) as f:
        server = Server(json.load(f), log, silent)

    # the same port number for UDP and TCP; when picking, retry if TCP's is taken
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((bind, port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((bind, udp.getsockname()[1]))
            break
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    tcp.listen(16)
    print(udp.getsockname()[1], flush=True)
    print("pid", os.getpid(), flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ, "udp")
    sel.register(tcp, selectors.EVENT_READ, "accept")
    if stat.S_ISFIFO(os.fstat(0).st_mode) or stat.S_ISSOCK(os.fstat(0).st_mode):
        sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    buffers = {}
    while True:
        if os.getppid() != parent:
            return
        for key, _ in sel.select(timeout=0.5):
            what, sock = key.data, key.fileobj
            if what == "stdin":
                if not os.read(0, 4096):
                    return
            elif what == "udp":
                msg, peer = sock.recvfrom(65535)
                out = server.answer(msg, UDP_LIMIT)
                if out is not None:
                    sock.sendto(out, peer)
            elif what == "accept":
                conn, _ = sock.accept()
                buffers[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "tcp")
            else:
                data = b""
                try:
                    data = sock.recv(65535)
                except OSError:
                    pass
                if not data:
                    sel.unregister(sock)
                    del buffers[sock]
                    sock.close()
                    continue
                buf = buffers[sock] + data
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    n = struct.unpack("!H", buf[:2])[0]
                    out = server.answer(buf[2:2 + n], 65535)
                    buf = buf[2 + n:]
                    if out is not None:
                        sock.sendall(struct.pack("!H", len(out)) + out)
                buffers[sock] = buf


if __name__ == "__main__":
    main()
