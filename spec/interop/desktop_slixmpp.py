#!/usr/bin/python3
"""slixmpp doing what desktop clients (poezio, Gajim) do on connecting to
lxmpp's embedded server, for spec/interop/desktop_slixmpp_spec.lua. Uses the
connection helpers of spec/support/slix.py (same flags) and prints
tab-separated records:

  desktop_slixmpp.py --port P --ca CA.pem SCENARIO ...

  bookmarks J P ROOM   server_feature VAR (MAM, private storage on the
                       server's disco#info), then XEP-0048 bookmarks stored
                       and read back through XEP-0049 (slixmpp's xep_0048
                       with method xep_0049, as poezio): private JID NAME
                       AUTOJOIN NICK PASSWORD, url URL; native ID NAME
                       AUTOJOIN NICK (the XEP-0402 node seen through
                       xep_0060); then a room added as a XEP-0402 item and
                       the XEP-0049 copy read again: after JID NAME AUTOJOIN;
                       then XEP-0048 over PEP (xep_0223): pep JID NAME,
                       and XEP-0049 again: after_pep JID NAME NICK
  archive J1 P1 J2 P2 ROOM
                       J1 makes ROOM, says three things, J2 joins and reads
                       the room's archive with xep_0313 (as Gajim does on
                       joining): room_feature VAR, archived FROM BODY,
                       stanza_id BY (what the live messages carried), fin
                       COMPLETE
Exit status 0 when the scenario completed, 2 when it failed, 3 on timeout.
"""
import argparse
import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import slix  # noqa: E402  (the suite's slixmpp helpers)
from slix import out, online, close, until, Failed, TIMEOUT  # noqa: E402

from slixmpp.xmlstream import ET  # noqa: E402

NS_BM = "urn:xmpp:bookmarks:1"


def plugins(x, *names):
    for n in names:
        x.register_plugin(n)


async def bookmarks(args, j, p, room):
    x = await online(j, p, args)
    plugins(x, "xep_0030", "xep_0004", "xep_0059", "xep_0060", "xep_0163", "xep_0223", "xep_0049", "xep_0048")
    info = await x["xep_0030"].get_info(jid=x.boundjid.domain)
    for var in sorted(info["disco_info"]["features"]):
        if var in ("urn:xmpp:mam:2", "jabber:iq:private"):
            out("server_feature", var)
    own = await x["xep_0030"].get_info(jid=x.boundjid.bare)
    for var in sorted(own["disco_info"]["features"]):
        if var.startswith(NS_BM):
            out("account_feature", var)

    Bookmarks = x["xep_0048"].stanza.Bookmarks
    bm = Bookmarks()
    bm.add_conference(room, "poezio-nick", name="Poezio room", autojoin=True, password="room-pw")
    bm.add_conference("other@" + room.split("@")[1], "n2", name="Other")
    bm.add_url("https://example.test/", name="Site")
    await x["xep_0048"].set_bookmarks(bm, method="xep_0049")
    got = await x["xep_0048"].get_bookmarks(method="xep_0049")
    for c in got["private"]["bookmarks"]["conferences"]:
        out("private", c["jid"], c["name"], c["autojoin"], c["nick"], c["password"])
    for u in got["private"]["bookmarks"]["urls"]:
        out("url", u["url"])

    items = await x["xep_0060"].get_items(jid=x.boundjid.bare, node=NS_BM)
    for it in items["pubsub"]["items"]:
        conf = it.xml.find("{%s}conference" % NS_BM)
        nick = conf.find("{%s}nick" % NS_BM)
        out("native", it["id"], conf.get("name"), conf.get("autojoin"), nick.text if nick is not None else "")

    # a XEP-0402 client (Gajim 1.4+, Conversations) adds a room
    conf = ET.Element("{%s}conference" % NS_BM, {"name": "Native", "autojoin": "true"})
    ET.SubElement(conf, "{%s}nick" % NS_BM).text = "gajim"
    form = x["xep_0004"].stanza.Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#access_model", value="whitelist")
    form.add_field(var="pubsub#persist_items", value="true")
    await x["xep_0060"].publish(x.boundjid.bare, NS_BM, id="native@" + room.split("@")[1], payload=conf,
                                options=form)
    got = await x["xep_0048"].get_bookmarks(method="xep_0049")
    for c in got["private"]["bookmarks"]["conferences"]:
        out("after", c["jid"], c["name"], c["autojoin"])

    # XEP-0048 over PEP (XEP-0223), slixmpp's other storage method
    pep = Bookmarks()
    pep.add_conference(room, "pep-nick", name="PEP room")
    await x["xep_0048"].set_bookmarks(pep, method="xep_0223")
    got = await x["xep_0048"].get_bookmarks(method="xep_0223")
    for c in got["pubsub"]["items"]["item"]["bookmarks"]["conferences"]:
        out("pep", c["jid"], c["name"])
    got = await x["xep_0048"].get_bookmarks(method="xep_0049")
    for c in got["private"]["bookmarks"]["conferences"]:
        out("after_pep", c["jid"], c["name"], c["nick"])
    await close(x)


async def archive(args, j1, p1, j2, p2, room):
    a = await online(j1, p1, args)
    b = await online(j2, p2, args)
    for x in (a, b):
        plugins(x, "xep_0030", "xep_0004", "xep_0059", "xep_0313")
    ids = []
    a.add_event_handler("groupchat_message", lambda m: m["body"] and ids.append(
        m.xml.find("{urn:xmpp:sid:0}stanza-id")))
    pres, _, _, _ = await a["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=TIMEOUT)
    if 201 in pres["muc"]["status_codes"]:
        await a["xep_0045"].set_room_config(room, a["xep_0004"].make_form(ftype="submit"))
    for body in ("first", "second", "third"):
        a.send_message(mto=room, mbody=body, mtype="groupchat")
    await until(lambda: len(ids) >= 3, "alice's groupchat echoed")
    for sid in ids:
        out("stanza_id", sid.get("by") if sid is not None else "")
    await b["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=TIMEOUT)
    info = await b["xep_0030"].get_info(jid=room)
    for var in sorted(info["disco_info"]["features"]):
        if var in ("urn:xmpp:mam:2", "urn:xmpp:sid:0"):
            out("room_feature", var)
    res = await b["xep_0313"].retrieve(jid=room, rsm={"max": 10})
    for r in res["mam"]["results"]:
        m = r["mam_result"]["forwarded"]["stanza"]
        out("archived", m["from"].full, m["body"], r["mam_result"]["id"] in
            [s.get("id") for s in ids if s is not None])
    out("fin", res.xml.find("{urn:xmpp:mam:2}fin").get("complete"))
    await close(a, b)


SCENARIOS = {"bookmarks": bookmarks, "archive": archive}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--debug", action="store_true")
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
    except (Failed, slix.slixmpp.exceptions.IqError) as e:
        print(repr(e), getattr(e, "iq", ""), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
