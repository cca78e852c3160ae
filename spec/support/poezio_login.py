#!/usr/bin/python3
"""Logs in the way poezio does, for spec/interop/server_poezio_spec.lua.

  poezio_login.py --port P --ca CA.pem --dir TMPDIR JID PASSWORD

Uses poezio's own connection class (poezio.connection.Connection, the
slixmpp client poezio 0.14 runs, with its plugins, cipher list and
force_encryption), configured from a poezio config file with poezio's
defaults except the account, the server's port and its CA. Nothing of the
client's SASL is changed. The JID's domain is resolved to 127.0.0.1 (slixmpp
then verifies the certificate for that domain, as poezio does for a real
server). Prints tab-separated records:

  version SLIXMPP_VERSION POEZIO_VERSION
  mech NAME / tls VERSION / jid FULL     after the session started, or
  auth_failed CONDITIONS                 when it did not
  stream_error CONDITION

Exit status 0 when the session started, 2 when it did not, 3 on timeout.
"""
import argparse
import asyncio
import os
import sys
from pathlib import Path

TIMEOUT = 20


def out(*fields):
    print("\t".join(str(f) for f in fields), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("jid")
    ap.add_argument("password")
    args = ap.parse_args()

    # poezio's directories (XDG base directories) in the spec's scratch dir;
    # its config read from there before anything of poezio reads it
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        os.environ[var] = os.path.join(os.path.abspath(args.dir), var.lower())
    cfg = Path(args.dir) / "poezio.cfg"
    cfg.write_text("[Poezio]\njid = %s\npassword = %s\ncustom_port = %d\nca_cert_path = %s\n"
                   % (args.jid, args.password, args.port, os.path.abspath(args.ca)))
    from poezio import config
    config.create_global_config(cfg)
    from poezio.asyncio_fix import monkey_patch_asyncio_slixmpp
    monkey_patch_asyncio_slixmpp()
    import slixmpp
    from poezio import version
    from poezio.connection import Connection

    x = Connection()
    out("version", slixmpp.__version__, version.__version__)
    failures = []
    done = asyncio.get_event_loop().create_future()

    def finish(ok):
        if not done.done():
            done.set_result(ok)

    async def dns_records(domain, port=None):
        return [(domain, "127.0.0.1", args.port)]
    x.get_dns_records = dns_records

    def started(_):
        out("mech", x["feature_mechanisms"].mech.name)
        out("tls", x.socket.version() if hasattr(x.socket, "version") else "none")
        out("jid", x.boundjid.full)
        finish(True)
    x.add_event_handler("session_start", started)
    x.add_event_handler("failed_auth", lambda f: failures.append(f["condition"]))
    x.add_event_handler("failed_all_auth", lambda _: finish(False))
    x.add_event_handler("stream_error", lambda e: (out("stream_error", e["condition"]), finish(False)))
    x.add_event_handler("ssl_invalid_chain", lambda e: (out("tls_failed", str(e)), finish(False)))
    x.add_event_handler("disconnected", lambda _: finish(False))
    x.start()           # poezio's own connect: custom_port to the JID's domain

    async def run():
        ok = await asyncio.wait_for(done, TIMEOUT)
        if failures:
            out("auth_failed", ",".join(failures))
        x.abort()
        return ok
    try:
        ok = asyncio.get_event_loop().run_until_complete(run())
    except asyncio.TimeoutError:
        print("timed out", file=sys.stderr)
        sys.exit(3)
    sys.exit(0 if ok else 2)


if __name__ == "__main__":
    main()
