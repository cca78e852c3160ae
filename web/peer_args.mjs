// The command line the suite's Node peers (web/xmpp_client.mjs,
// web/sasl2_client.mjs) share: --service --domain --username --password
// --to --body --expect (required), --resource, --timeout, --log. On a bad
// or missing argument it prints "<name>: <why>" and exits 2.

import { parseArgs } from 'node:util';

export function peerArgs(name) {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        service: { type: 'string' }, domain: { type: 'string' }, username: { type: 'string' },
        password: { type: 'string' }, resource: { type: 'string', default: 'xmppjs' },
        to: { type: 'string' }, body: { type: 'string' }, expect: { type: 'string' },
        timeout: { type: 'string', default: '30' }, log: { type: 'boolean', default: false },
      },
    }));
  } catch (e) {
    console.error(`${name}: ${e.message}`);
    process.exit(2);
  }
  for (const n of ['service', 'domain', 'username', 'password', 'to', 'body', 'expect']) {
    if (args[n] === undefined) {
      console.error(`${name}: --${n} is required`);
      process.exit(2);
    }
  }
  return args;
}
