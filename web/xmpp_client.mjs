// An @xmpp/client (xmpp.js) peer over WebSocket (RFC 7395): logs in, sends
// one chat message and waits for a reply whose body contains a text. Exits 0
// when the reply came, 1 with "xmpp_client: FAILED at <step>: <why>"
// otherwise, 2 on bad arguments.
//
//   node web/xmpp_client.mjs --service ws://127.0.0.1:5280/xmpp-websocket \
//     --domain example.test --username carol --password secret \
//     --to bot@example.test --body xmpp --expect 'xmpp: the Extensible'
//
// Optional: --resource, --timeout (seconds for everything, default 30),
// --log (every stanza in and out on stderr). A wss:// service is verified
// against Node's CA store: for the suite's test CA, run with
// NODE_EXTRA_CA_CERTS=/path/to/ca.pem. Each step prints "ok <step> <ms>".

import { spawnSync } from 'node:child_process';

// @xmpp/websocket uses the WHATWG WebSocket global: Node.js 22 has it, Node.js
// 20 (Debian 12's nodesource build, the suite's machines) only behind
// --experimental-websocket, so the script runs itself again with the flag.
if (typeof globalThis.WebSocket === 'undefined') {
  const r = spawnSync(process.execPath, ['--experimental-websocket', '--no-warnings', ...process.argv.slice(1)],
    { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const { client, xml } = await import('@xmpp/client');
const { peerArgs } = await import('./peer_args.mjs');

const args = peerArgs('xmpp_client');

let step = 'connect';
const xmpp = client({
  service: args.service, domain: args.domain, resource: args.resource,
  username: args.username, password: args.password,
});
// one try: a failure is reported, not retried
xmpp.reconnect.stop();

let finished = false;
function finish(code, why) {
  if (finished) return;
  finished = true;
  if (code !== 0) console.log(`xmpp_client: FAILED at ${step}: ${why}`);
  else console.log('xmpp_client: all steps passed');
  clearTimeout(overall);
  const hardStop = setTimeout(() => process.exit(code), 3000);   // a stop that hangs
  xmpp.stop().catch(() => {}).finally(() => { clearTimeout(hardStop); process.exit(code); });
}
const overall = setTimeout(() => finish(1, `overall timeout of ${args.timeout} s`), Number(args.timeout) * 1000);

if (args.log) {
  xmpp.on('element', (el) => console.error(`IN  ${el.toString()}`));
  xmpp.on('send', (el) => console.error(`OUT ${el.toString()}`));
}
xmpp.on('error', (err) => finish(1, `${err.condition || err.code || ''} ${err.message || err}`.trim()));
xmpp.on('offline', () => finish(1, 'went offline'));

let t0 = Date.now();
xmpp.on('stanza', (st) => {
  if (step !== 'reply' || !st.is('message')) return;
  const body = st.getChildText('body');
  if (st.attrs.type === 'error') return finish(1, `error reply: ${st.toString()}`);
  if (body !== null && body.includes(args.expect)) {
    console.log(`ok reply ${Date.now() - t0}`);
    console.log(`reply: ${body}`);
    finish(0);
  }
});

xmpp.on('online', async (address) => {
  console.log(`ok connect ${Date.now() - t0} ${address.toString()}`);
  step = 'presence';
  await xmpp.send(xml('presence'));
  step = 'reply';
  t0 = Date.now();
  await xmpp.send(xml('message', { to: args.to, type: 'chat' }, xml('body', {}, args.body)));
});

xmpp.start().catch((err) => finish(1, `${err.condition || err.code || ''} ${err.message || err}`.trim()));
