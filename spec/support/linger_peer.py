#!/usr/bin/python3
"""A client that is still sending when the server closes, for the specs of
the lingering close (csrc/net_io.c, lx_net_drain).

    linger_peer.py PORT RCVBUF HEADER_FILE PAYLOAD_FILE MODE

It connects to 127.0.0.1:PORT with SO_RCVBUF set to RCVBUF before the
connect (a small one makes the server's output back up in the server's
send queue), sends the bytes of HEADER_FILE, waits until the server has
answered with at least one byte, then sends the bytes of PAYLOAD_FILE:

    block     with a blocking sendall (a client busy writing a big stanza,
              reading nothing until it is done)
    nowait    without blocking, as much as the socket buffers take now,
              then 0.3 s without reading (the server closes meanwhile)

and then reads until the end. A server that closes on unread input makes
its kernel answer with a RST: the send fails, or the read ends with
ECONNRESET and what the server's send queue still held is lost.

It prints key=value lines: sent (payload bytes sent), send_error (the
errno name, or "none"), received (bytes read), end ("eof" or the errno
name), and last, the hex of the last 512 bytes read.
"""

import errno
import socket
import sys
import time


def main():
    port, rcvbuf = int(sys.argv[1]), int(sys.argv[2])
    with open(sys.argv[3], "rb") as f:
        header = f.read()
    with open(sys.argv[4], "rb") as f:
        payload = f.read()
    mode = sys.argv[5]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    s.sendall(header)
    got = bytearray(s.recv(1))
    sent, send_error = 0, "none"
    try:
        if mode == "block":
            s.sendall(payload)
            sent = len(payload)
        else:
            s.setblocking(False)
            while sent < len(payload):
                try:
                    sent += s.send(payload[sent:])
                except BlockingIOError:
                    break
            s.settimeout(20)
            time.sleep(0.3)
    except OSError as e:
        send_error = errno.errorcode.get(e.errno, str(e.errno))
    end = "eof"
    while True:
        try:
            b = s.recv(65536)
        except socket.timeout:
            end = "timeout"
            break
        except OSError as e:
            end = errno.errorcode.get(e.errno, str(e.errno))
            break
        if not b:
            break
        got += b
    s.close()
    print("sent=%d" % sent)
    print("send_error=%s" % send_error)
    print("received=%d" % len(got))
    print("end=%s" % end)
    print("last=%s" % bytes(got[-512:]).hex())


main()
