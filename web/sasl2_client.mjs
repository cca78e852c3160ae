// An @xmpp/client (xmpp.js 0.14) peer that logs in twice over TCP with
// STARTTLS (its defaults: SASL2, Bind2, FAST): first with the password,
// asking for a FAST token, then with that token; each time it sends one chat
// message and waits for a reply containing a text. It prints, per login,
// "ok login<N> <mechanism> <jid> bound=<yes|no> token=<yes|no>", then
// "ok reply<N>". Exits 0 when both logins and replies came, 1 with
// "sasl2_client: FAILED at <step>: <why>" otherwise, 2 on bad arguments.
//
//   NODE_EXTRA_CA_CERTS=ca.pem node web/sasl2_client.mjs \
//     --service xmpp://127.0.0.1:5222 --domain example.test \
//     --username carol --password secret --to bot@example.test --body hi --expect 'hi'
//
// Optional: --timeout (seconds for everything, default 30), --log (every
// element in and out on stderr: tokens included, for debugging only).

import { peerArgs } from './peer_args.mjs';
import { client, xml } from '@xmpp/client';

const args = peerArgs('sasl2_client');

let step = 'login1';
let current = null;
const overall = setTimeout(() => fail(`overall timeout of ${args.timeout} s`), Number(args.timeout) * 1000);

function fail(why) {
  console.log(`sasl2_client: FAILED at ${step}: ${why}`);
  clearTimeout(overall);
  const hardStop = setTimeout(() => process.exit(1), 3000);
  (current ? current.stop() : Promise.resolve()).catch(() => {}).finally(() => {
    clearTimeout(hardStop);
    process.exit(1);
  });
}

// one installation: the same user-agent id for both logins (XEP-0388 §2.3)
const userAgent = xml('user-agent', { id: globalThis.crypto.randomUUID() },
  xml('software', {}, 'sasl2_client.mjs'), xml('device', {}, 'lxmpp interop'));
let token = null;

// One login; resolves when the reply came and the client stopped.
function session(n) {
  return new Promise((resolve) => {
    const xmpp = client({
      service: args.service, domain: args.domain, resource: args.resource,
      username: args.username, password: args.password, userAgent,
    });
    current = xmpp;
    xmpp.reconnect.stop();
    xmpp.fast.saveToken = async (t) => { token = t; };
    xmpp.fast.fetchToken = async () => token;
    let mechanism = '?';
    let bound = false;
    let gotToken = false;
    xmpp.on('send', (el) => {
      if (args.log) console.error(`OUT ${el.toString()}`);
      if (el.is('authenticate', 'urn:xmpp:sasl:2')) mechanism = el.attrs.mechanism;
    });
    xmpp.on('nonza', (el) => {
      if (el.is('success', 'urn:xmpp:sasl:2')) {
        bound = el.getChild('bound', 'urn:xmpp:bind:0') !== undefined;
        gotToken = el.getChild('token', 'urn:xmpp:fast:0') !== undefined;
      }
    });
    xmpp.on('element', (el) => { if (args.log) console.error(`IN  ${el.toString()}`); });
    xmpp.on('error', (err) => fail(`${err.condition || err.code || ''} ${err.message || err}`.trim()));
    let t0 = Date.now();
    xmpp.on('stanza', (st) => {
      if (step !== `reply${n}` || !st.is('message')) return;
      if (st.attrs.type === 'error') return fail(`error reply: ${st.toString()}`);
      const body = st.getChildText('body');
      if (body !== null && body.includes(args.expect)) {
        console.log(`ok reply${n} ${Date.now() - t0}`);
        step = `stop${n}`;
        xmpp.stop().then(resolve, (e) => fail(e.message));
      }
    });
    xmpp.on('online', async (address) => {
      console.log(`ok login${n} ${mechanism} ${address.toString()} bound=${bound ? 'yes' : 'no'} ` +
        `token=${gotToken ? 'yes' : 'no'} ${Date.now() - t0}`);
      step = `reply${n}`;
      t0 = Date.now();
      await xmpp.send(xml('presence'));
      await xmpp.send(xml('message', { to: args.to, type: 'chat' }, xml('body', {}, `${args.body} ${n}`)));
    });
    xmpp.start().catch((err) => fail(`${err.condition || err.code || ''} ${err.message || err}`.trim()));
  });
}

await session(1);
if (!token) fail('no FAST token was issued');
step = 'login2';
await session(2);
clearTimeout(overall);
console.log('sasl2_client: all steps passed');
process.exit(0);
