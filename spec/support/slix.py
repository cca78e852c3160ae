#!/usr/bin/python3
"""slixmpp clients for spec/interop/server_slixmpp_spec.lua.

Runs one scenario against an XMPP server on loopback and prints what the
clients saw, one tab-separated record per line, for the spec to check:

  slix.py --port P --ca CA.pem [--tls12] SCENARIO JID PASSWORD [...]

  login  J P              version V, then mech NAME / jid FULL / tls VERSION / cert SANS, or
                          auth_failed CONDS, tls_failed REASON
  pair   J1 P1 J2 P2      roster OWNER CONTACT SUBSCRIPTION, presence SEER FROM SHOW STATUS,
                          message TO FROM BODY, unavailable SEER FROM (roster add,
                          subscription handshake both ways, presence, a message each
                          way, then J1 leaves)
  send   J P TO BODY      sent TO
  receive J P COUNT       message TO FROM BODY DELAY_STAMP DELAY_FROM (after initial presence)
  muc    J1 P1 J2 P2 ROOM joined WHO OCCUPANT AFFILIATION ROLE CODES, occupant SEER OCCUPANT,
                          groupchat TO FROM BODY (J1 creates ROOM as an instant room, J2
                          joins, each says something to the room)
  unroster J1 P1 J2 P2    probed SEER FROM STATUS, unavailable SEER FROM, roster OWNER CONTACT
                          SUBSCRIPTION (J1 and J2 already subscribed both ways: J1 probes J2,
                          then removes J2 from its roster; each sees the other go)
  members J1 P1 J2 P2 ROOM config_status SEER CODES, members ASKER JIDS, refused ASKER LIST
                          CONDITION (J1 creates ROOM members-only and non-anonymous, makes
                          J2 a member; J2, not in the room, reads the member list, not the
                          owner list)

The clients are stock slixmpp with its defaults: SASL, channel binding
included, is slixmpp's own (1.8.3, Debian 12's, binds with tls-unique on any
TLS version). --tls12 caps TLS at 1.2 (the server's TLS 1.2 path). TLS is
verified normally against the CA given (the server's certificate must name
the JID's domain). Exit status 0 when the scenario completed,
2 when it failed (the reason is on stderr), 3 on timeout.
"""
import argparse
import asyncio
import logging
import ssl
import sys

import slixmpp

TIMEOUT = 20


def out(*fields):
    print("\t".join(str(f) for f in fields), flush=True)


class Failed(Exception):
    pass


async def online(jid, password, args, presence=True, roster=True):
    """A connected, bound client (its initial presence sent unless told)."""
    x = slixmpp.ClientXMPP(jid, password)
    x.register_plugin("xep_0203")   # delayed delivery
    x.register_plugin("xep_0045")   # MUC
    x.ca_certs = args.ca
    if getattr(args, "tls12", False):
        x.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
    x.auto_authorize = None          # subscriptions are handled by the scenario
    x.auto_subscribe = False
    started = asyncio.get_running_loop().create_future()
    failures = []

    def done(exc=None):
        if not started.done():
            if exc:
                started.set_exception(exc)
            else:
                started.set_result(True)

    x.add_event_handler("session_start", lambda _: done())
    x.add_event_handler("failed_auth", lambda f: failures.append(f["condition"]))
    x.add_event_handler("failed_all_auth", lambda _: done(Failed("auth_failed\t" + ",".join(failures))))
    x.add_event_handler("stream_error", lambda e: failures.append("stream:" + e["condition"]))
    x.add_event_handler("disconnected", lambda _: done(Failed("auth_failed\t" + ",".join(failures)
                                                              if failures else "disconnected")))
    x.add_event_handler("ssl_invalid_chain", lambda e: (done(Failed("tls_failed\t" + str(e))), x.abort()))
    x.add_event_handler("connection_failed", lambda e: done(Failed("connection_failed\t" + str(e))))
    # slixmpp connects the usual way, to the JID's domain, and so verifies
    # the certificate against that name; only the name lookup is the
    # spec's (given an IP address instead, slixmpp 1.8.3 checks no name)
    async def dns_records(domain, port=None):
        return [(domain, args.host, args.port)]
    x.get_dns_records = dns_records
    x.connect()
    await asyncio.wait_for(started, TIMEOUT)
    if roster:
        await x.get_roster()
    if presence:
        x.send_presence()
    return x


async def close(*clients):
    for x in clients:
        await x.disconnect()


async def until(pred, what, timeout=10):
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise Failed("timed out waiting for " + what)


async def login(args, jid, password):
    try:
        x = await online(jid, password, args, presence=False, roster=False)
    except Failed as e:
        out("version", slixmpp.__version__)
        out(str(e))
        return
    out("version", slixmpp.__version__)
    out("mech", x["feature_mechanisms"].mech.name)
    out("jid", x.boundjid.full)
    out("tls", x.socket.version() if hasattr(x.socket, "version") else "none")
    peer = x.socket.getpeercert() if hasattr(x.socket, "getpeercert") else None
    out("cert", ",".join(v for _, v in (peer or {}).get("subjectAltName", ())))
    await close(x)


async def pair(args, j1, p1, j2, p2):
    a = await online(j1, p1, args)
    b = await online(j2, p2, args)
    abare, bbare = a.boundjid.bare, b.boundjid.bare
    seen = []      # (seer, from, show, status)
    got = []       # (to, from, body)
    for me, x in (("a", a), ("b", b)):
        x.add_event_handler("presence",
                            lambda p, x=x: p["type"] in ("available", "chat", "away", "xa", "dnd") and seen.append(
                                (x.boundjid.bare, p["from"].full, p["show"], p["status"])))
        x.add_event_handler("message", lambda m, x=x: m["body"] and got.append(
            (x.boundjid.bare, m["from"].full, m["body"])))

    # b approves a's request and asks back; a approves b's request
    def on_subscribe(x, p):
        x.send_presence(pto=p["from"].bare, ptype="subscribed")
        if x is b:
            x.send_presence(pto=p["from"].bare, ptype="subscribe")
    a.add_event_handler("presence_subscribe", lambda p: on_subscribe(a, p))
    b.add_event_handler("presence_subscribe", lambda p: on_subscribe(b, p))

    await a.update_roster(bbare, name="Bob", groups=["Friends"])
    a.send_presence(pto=bbare, ptype="subscribe")

    def both(x, contact):
        return contact in x.client_roster and x.client_roster[contact]["subscription"] == "both"
    await until(lambda: both(a, bbare) and both(b, abare), "subscription=both on both sides")
    await a.get_roster()
    await b.get_roster()
    for x, contact in ((a, bbare), (b, abare)):
        item = x.client_roster[contact]
        out("roster", x.boundjid.bare, contact, item["subscription"], item["name"], ",".join(item["groups"]))

    # each now sees the other's presence
    a.send_presence(pshow="chat", pstatus="alice here")
    b.send_presence(pshow="away", pstatus="bob here")
    await until(lambda: any(s[0] == abare and s[3] == "bob here" for s in seen)
                and any(s[0] == bbare and s[3] == "alice here" for s in seen), "presence both ways")
    for s in seen:
        if s[3] in ("alice here", "bob here"):
            out("presence", *s)

    a.send_message(mto=b.boundjid.full, mbody="hello bob", mtype="chat")
    await until(lambda: any(g[0] == bbare for g in got), "bob's message")
    b.send_message(mto=abare, mbody="hello alice", mtype="chat")
    await until(lambda: any(g[0] == abare for g in got), "alice's message")
    for g in got:
        out("message", *g)

    # a leaves: b learns it
    gone = []
    b.add_event_handler("presence_unavailable", lambda p: gone.append(p["from"].full))
    afull = a.boundjid.full
    await close(a)
    await until(lambda: afull in gone, "alice's unavailable presence")
    out("unavailable", bbare, afull)
    await close(b)


async def send(args, jid, password, to, body):
    x = await online(jid, password, args)
    x.send_message(mto=to, mbody=body, mtype="chat")
    out("sent", to)
    await close(x)


async def receive(args, jid, password, count):
    got = []
    x = await online(jid, password, args, presence=False)
    x.add_event_handler("message", lambda m: m["body"] and got.append(m))
    x.send_presence()   # offline messages come after the initial presence
    await until(lambda: len(got) >= int(count), count + " messages")
    for m in got:
        d = m["delay"]
        out("message", x.boundjid.bare, m["from"].full, m["body"],
            d["stamp"].isoformat() if d["stamp"] else "", d["from"].full if d["from"] else "")
    await close(x)


async def muc(args, j1, p1, j2, p2, room):
    a = await online(j1, p1, args)
    b = await online(j2, p2, args)
    got = []
    for x in (a, b):
        x.add_event_handler("groupchat_message", lambda m, x=x: m["body"] and got.append(
            (x.boundjid.bare, m["from"].full, m["body"])))
    joined = {}
    for x in (a, b):
        x.add_event_handler("muc::%s::got_online" % room,
                            lambda p, x=x: joined.setdefault(x.boundjid.bare, []).append(p["from"].full))
    # a creates the room and, as its owner, accepts the default configuration
    # (an instant room, XEP-0045 §10.1.2): it stays locked until then
    pres, _, _, _ = await a["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=TIMEOUT)
    codes = pres["muc"]["status_codes"]
    out("joined", a.boundjid.bare, pres["from"].full, pres["muc"]["affiliation"], pres["muc"]["role"],
        ",".join(str(c) for c in sorted(codes)))
    if 201 in codes:
        await a["xep_0045"].set_room_config(room, a["xep_0004"].make_form(ftype="submit"))
    pres, _, occupants, _ = await b["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=TIMEOUT)
    out("joined", b.boundjid.bare, pres["from"].full, pres["muc"]["affiliation"], pres["muc"]["role"],
        ",".join(str(c) for c in sorted(pres["muc"]["status_codes"])))
    for o in occupants:
        out("occupant", b.boundjid.bare, o["from"].full)
    await until(lambda: room + "/bob" in joined.get(a.boundjid.bare, []), "alice seeing bob join")
    out("occupant", a.boundjid.bare, room + "/bob")
    a.send_message(mto=room, mbody="hi room from alice", mtype="groupchat")
    await until(lambda: sum(1 for g in got if g[2] == "hi room from alice") >= 2, "alice's groupchat")
    b.send_message(mto=room, mbody="hi room from bob", mtype="groupchat")
    await until(lambda: sum(1 for g in got if g[2] == "hi room from bob") >= 2, "bob's groupchat")
    for g in got:
        out("groupchat", *g)
    await close(a, b)


async def unroster(args, j1, p1, j2, p2):
    a = await online(j1, p1, args)
    b = await online(j2, p2, args, presence=False)
    abare, bbare = a.boundjid.bare, b.boundjid.bare
    afull, bfull = a.boundjid.full, b.boundjid.full
    seen = []      # (seer, from, type, status)
    for x in (a, b):
        x.add_event_handler("presence", lambda p, x=x: seen.append(
            (x.boundjid.bare, p["from"].full, p["type"], p["status"])))

    def saw(seer, frm, kinds, status=None):
        return [s for s in seen if s[0] == seer and s[1] == frm and s[2] in kinds
                and (status is None or s[3] == status)]
    available = ("available", "chat", "away", "xa", "dnd")
    b.send_presence(pstatus="bob here")
    await until(lambda: saw(abare, bfull, available) and saw(bbare, afull, available), "presence both ways")
    # a client's probe is answered with the contact's presence (RFC 6121 §4.3)
    before = len(saw(abare, bfull, available))
    a.send_presence(pto=bbare, ptype="probe")
    await until(lambda: len(saw(abare, bfull, available, "bob here")) > before, "the answer to alice's probe")
    out("probed", abare, bfull, saw(abare, bfull, available)[-1][3])
    # removing the contact: it sees a go, and a sees it go (RFC 6121 §2.5.2)
    removed = a.del_roster_item(bbare)
    if asyncio.isfuture(removed) or asyncio.iscoroutine(removed):
        await removed
    await until(lambda: saw(bbare, afull, ("unavailable",)), "bob seeing alice go")
    out("unavailable", bbare, afull)
    await until(lambda: saw(abare, bfull, ("unavailable",)), "alice seeing bob go")
    out("unavailable", abare, bfull)
    await b.get_roster()
    await until(lambda: abare in b.client_roster and b.client_roster[abare]["subscription"] == "none",
                "bob's roster without a subscription")
    out("roster", bbare, abare, b.client_roster[abare]["subscription"])
    await close(a, b)


async def members(args, j1, p1, j2, p2, room):
    a = await online(j1, p1, args)
    b = await online(j2, p2, args)
    notices = []
    a.add_event_handler("groupchat_config_status", lambda m: notices.append(m["muc"]["status_codes"]))
    pres, _, _, _ = await a["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=TIMEOUT)
    if 201 not in pres["muc"]["status_codes"]:
        raise Failed("the room was not new")
    form = a["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    form.add_field(var="muc#roomconfig_membersonly", ftype="boolean", value=True)
    form.add_field(var="muc#roomconfig_whois", ftype="list-single", value="anyone")
    await a["xep_0045"].set_room_config(room, form)
    await until(lambda: notices, "the configuration notice")
    out("config_status", a.boundjid.bare, ",".join(str(c) for c in sorted(notices[0])))
    await a["xep_0045"].set_affiliation(room, "member", jid=b.boundjid.bare)
    listed = await b["xep_0045"].get_affiliation_list(room, "member")
    out("members", b.boundjid.bare, ",".join(sorted(str(j) for j in listed)))
    try:
        await b["xep_0045"].get_affiliation_list(room, "owner")
        out("refused", b.boundjid.bare, "owner", "none")
    except slixmpp.exceptions.IqError as e:
        out("refused", b.boundjid.bare, "owner", e.iq["error"]["condition"])
    await close(a, b)


SCENARIOS = {"login": login, "pair": pair, "send": send, "receive": receive, "muc": muc,
             "unroster": unroster, "members": members}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--tls12", action="store_true", help="TLS 1.2 at most")
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("words", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr)

    async def run():
        await asyncio.wait_for(SCENARIOS[args.scenario](args, *args.words), TIMEOUT * 2)
    try:
        asyncio.run(run())
    except asyncio.TimeoutError:
        print("timed out", file=sys.stderr)
        sys.exit(3)
    except Failed as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
