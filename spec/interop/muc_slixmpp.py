#!/usr/bin/python3
# Two slixmpp clients (its xep_0045 plugin) in one room of lxmpp's embedded
# server: alice creates and configures the room, talks before bob comes (so
# bob gets it as history), bob joins, both exchange groupchat and private
# messages, alice sets the subject and kicks bob, bob comes back and goes
# offline. Prints one "ok <step>" line per step that happened as XEP-0045
# says, and exits 0 when all did.
#
#   muc_slixmpp.py HOST PORT DOMAIN ROOM CAFILE

import asyncio
import logging
import os
import sys

import slixmpp

HOST, PORT, DOMAIN, ROOM, CAFILE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
TIMEOUT = 10


def ok(step):
    print("ok " + step, flush=True)


def client(user):
    # slixmpp's defaults: SCRAM-SHA-256-PLUS with its tls-unique
    c = slixmpp.ClientXMPP("%s@%s/sl" % (user, DOMAIN), "pw-" + user)
    c.ca_certs = CAFILE
    c.register_plugin("xep_0030")
    c.register_plugin("xep_0045")
    c.register_plugin("xep_0004")
    c.register_plugin("xep_0203")
    return c


async def online(c):
    started = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    c.connect((HOST, PORT))
    await asyncio.wait_for(started, TIMEOUT)
    c.send_presence()


def waiter(c, event, pred=lambda s: True):
    fut = asyncio.get_running_loop().create_future()

    def handler(s):
        if not fut.done() and pred(s):
            fut.set_result(s)
    c.add_event_handler(event, handler)
    return fut


async def main():
    alice, bob = client("alice"), client("bob")
    await online(alice)
    await online(bob)
    muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]

    pres, _subject, _occupants, _history = await muc_a.join_muc_wait(ROOM, "alice", timeout=TIMEOUT)
    codes = pres["muc"]["status_codes"]
    assert 201 in codes and 110 in codes, codes
    assert pres["muc"]["affiliation"] == "owner" and pres["muc"]["role"] == "moderator"
    ok("created")

    form = await muc_a.get_room_config(ROOM, timeout=TIMEOUT)
    fields = form.get_fields()
    assert "muc#roomconfig_roomname" in fields and "muc#roomconfig_persistentroom" in fields, list(fields)
    form.set_values({"muc#roomconfig_roomname": "Interop", "muc#roomconfig_changesubject": False})
    await muc_a.set_room_config(ROOM, form, timeout=TIMEOUT)
    ok("configured")

    info = await alice.plugin["xep_0030"].get_info(jid=ROOM, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    assert "http://jabber.org/protocol/muc" in features and "muc_temporary" in features, features
    ok("disco")

    alice.send_message(mto=ROOM, mbody="hello from alice", mtype="groupchat")
    echo = await asyncio.wait_for(waiter(alice, "groupchat_message"), TIMEOUT)
    assert echo["from"] == ROOM + "/alice" and echo["body"] == "hello from alice"
    ok("echo")

    joined = waiter(alice, "muc::%s::got_online" % ROOM, lambda p: p["from"].resource == "bob")
    pres, subject, occupants, history = await muc_b.join_muc_wait(ROOM, "bob", maxstanzas=10, timeout=TIMEOUT)
    assert 110 in pres["muc"]["status_codes"]
    assert [m["body"] for m in history] == ["hello from alice"], [str(m) for m in history]
    nicks = [p["from"].resource for p in occupants]  # slixmpp counts its own presence in
    assert nicks[0] == "alice" and set(nicks) == {"alice", "bob"}, nicks
    seen = await asyncio.wait_for(joined, TIMEOUT)
    assert seen["muc"]["jid"] == "bob@%s/sl" % DOMAIN  # alice moderates: she sees real JIDs
    ok("history")

    got = waiter(alice, "groupchat_message", lambda m: m["body"] == "hi alice")
    bob.send_message(mto=ROOM, mbody="hi alice", mtype="groupchat")
    m = await asyncio.wait_for(got, TIMEOUT)
    assert m["from"] == ROOM + "/bob"
    ok("groupchat")

    got = waiter(alice, "message", lambda m: m["body"] == "psst")
    bob.send_message(mto=ROOM + "/alice", mbody="psst", mtype="chat")
    m = await asyncio.wait_for(got, TIMEOUT)
    assert m["from"] == ROOM + "/bob" and m["type"] == "chat"
    ok("private")

    got = waiter(bob, "groupchat_subject", lambda m: m["subject"] == "Interop topic")
    muc_a.set_subject(ROOM, "Interop topic")
    await asyncio.wait_for(got, TIMEOUT)
    ok("subject")

    kicked = waiter(bob, "muc::%s::presence" % ROOM,
                    lambda p: p["type"] == "unavailable" and 307 in p["muc"]["status_codes"])
    await muc_a.set_role(ROOM, "bob", "none", reason="enough", timeout=TIMEOUT)
    p = await asyncio.wait_for(kicked, TIMEOUT)
    assert 110 in p["muc"]["status_codes"]
    ok("kick")

    # bob comes back, then goes offline without leaving: his server tells the
    # room (directed presence, RFC 6121 section 4.6.3)
    await muc_b.join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=TIMEOUT)
    gone = waiter(alice, "muc::%s::got_offline" % ROOM, lambda p: p["from"].resource == "bob")
    bob.disconnect()
    await asyncio.wait_for(gone, TIMEOUT)
    ok("offline")

    alice.disconnect()


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG if os.environ.get("MUC_DEBUG") else logging.ERROR)
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    except BaseException as e:
        print("failed: %r" % (e,), flush=True)
        sys.exit(1)
