// Drives Converse.js (web/converse.html) in Debian's headless Chromium
// through playwright-core, as a person would: logs in through the login
// form, finds a contact in the roster, chats with a bot, talks in a room,
// and takes a screenshot. Exits 0 when every step passed, 1 with a line
// "converse_drive: FAILED at <step>: <why>" otherwise, 2 on bad arguments.
//
//   node web/converse_drive.mjs \
//     --url 'http://127.0.0.1:5280/files/converse.html?websocket_url=ws://127.0.0.1:5280/xmpp-websocket' \
//     --jid alice@example.test --password secret \
//     --contact bot@example.test \
//     --bot bot@example.test --word xmpp --expect 'xmpp: the Extensible' \
//     --muc lounge@conference.example.test --nick alice \
//     --muc-say 'hello from converse' --muc-expect 'hello back from lxmpp' \
//     --screenshot /tmp/converse.png
//
// Optional: --contact-name (the roster entry's shown name, default: the
// contact JID's), --timeout (seconds for everything, default 90),
// --step-timeout (seconds per step, default 30), --chromium (default
// /usr/bin/chromium), --log (Converse's page console to stderr).
// Each step prints "ok <step> <ms>" on stdout when done.
//
// Chromium reaches nothing but loopback: its resolver maps every name to
// nothing (127.0.0.1 and localhost excepted), and the page's requests to any
// other host are aborted and make the run fail.

import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const USAGE = 'usage: node converse_drive.mjs --url URL --jid JID --password PW [--contact JID [--contact-name NAME]]\n'
  + '  [--bot JID --word WORD --expect TEXT] [--muc ROOM --nick NICK --muc-say TEXT --muc-expect TEXT]\n'
  + '  [--screenshot PATH] [--timeout S] [--step-timeout S] [--chromium PATH] [--log]';

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      url: { type: 'string' }, jid: { type: 'string' }, password: { type: 'string' },
      contact: { type: 'string' }, 'contact-name': { type: 'string' },
      bot: { type: 'string' }, word: { type: 'string' }, expect: { type: 'string' },
      muc: { type: 'string' }, nick: { type: 'string' }, 'muc-say': { type: 'string' }, 'muc-expect': { type: 'string' },
      screenshot: { type: 'string' }, timeout: { type: 'string', default: '90' },
      'step-timeout': { type: 'string', default: '30' }, chromium: { type: 'string', default: '/usr/bin/chromium' },
      log: { type: 'boolean', default: false },
    },
  }));
} catch (e) {
  console.error(`converse_drive: ${e.message}\n${USAGE}`);
  process.exit(2);
}
const need = (...names) => names.every((n) => args[n] !== undefined);
if (!need('url', 'jid', 'password') || (args.bot && !need('word', 'expect'))
    || (args.muc && !need('nick', 'muc-say', 'muc-expect'))) {
  console.error(`converse_drive: missing arguments\n${USAGE}`);
  process.exit(2);
}
const STEP_MS = Number(args['step-timeout']) * 1000;
const TOTAL_MS = Number(args.timeout) * 1000;

let step = 'start';
let browser;
const profile = mkdtempSync(join(tmpdir(), 'lxmpp-chromium-'));
const offsite = [];

let timedOut = false;
function fail(why) {
  if (timedOut) return 1;                          // (already said why)
  console.log(`converse_drive: FAILED at ${step}: ${why}`);
  return 1;
}

// The whole run's deadline: whatever hangs, the process ends.
const overall = setTimeout(async () => {
  timedOut = true;
  console.log(`converse_drive: FAILED at ${step}: overall timeout of ${args.timeout} s`);
  try { await browser?.close(); } catch { /* ends below anyway */ }
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}, TOTAL_MS);

async function timed(name, fn) {
  step = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok ${name} ${Date.now() - t0}`);
}

// a message whose whole text is s (the bot's answer repeats the word)
const exactly = (s) => new RegExp(`^\\s*${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`);

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

async function run() {
  // a persistent context on a new empty profile: Playwright passes it to
  // Chromium as --user-data-dir (it refuses that flag among args)
  const context = browser = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
    ],
    viewport: { width: 1280, height: 800 },
    timeout: STEP_MS,
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  if (args.log) page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.protocol === 'data:' || u.protocol === 'blob:' || LOOPBACK.has(u.hostname)) return route.continue();
    offsite.push(route.request().url());
    return route.abort('blockedbyclient');
  });

  await timed('page', async () => {
    const r = await page.goto(args.url, { waitUntil: 'load' });
    if (!r || !r.ok()) throw new Error(`GET ${args.url}: ${r ? r.status() : 'no response'}`);
    await page.waitForFunction(() => window.lxmppHarness && window.lxmppHarness.api);
  });

  await timed('login', async () => {
    const form = page.locator('converse-login-form form, form.converse-form');
    await form.locator('#converse-login-jid').fill(args.jid);
    await form.locator('#converse-login-password').fill(args.password);
    await form.locator('button[type=submit]').click();
    const status = await page.waitForFunction(() => {
      const s = window.lxmppHarness.status;
      return (s === 'connected' || s === 'disconnected' || s === 'failed') && s;
    });
    const s = await status.jsonValue();
    if (s !== 'connected') {
      const msg = await page.locator('.conn-feedback').allTextContents().catch(() => []);
      throw new Error(`not connected (${s}) ${msg.join(' ')} ${pageErrors.join(' ')}`);
    }
  });

  if (args.contact) {
    const name = args['contact-name'] || args.contact;
    await timed('roster', async () => {
      await page.locator('converse-roster .contact-name', { hasText: name }).first().waitFor();
    });
  }

  if (args.bot) {
    await timed('chat', async () => {
      const entry = page.locator('converse-roster a.open-chat', { hasText: args['contact-name'] || args.bot });
      if (args.contact && (await entry.count()) > 0) {
        await entry.first().click();                 // as a person opens a chat
      } else {
        await page.evaluate((jid) => window.lxmppHarness.api.chats.open(jid, {}, true), args.bot);
      }
      const chat = page.locator(`converse-chat[jid="${args.bot}"]`);
      const box = chat.locator('textarea.chat-textarea');
      await box.fill(args.word);
      await box.press('Enter');
      await chat.locator('.chat-msg__text', { hasText: exactly(args.word) }).first().waitFor();
      await chat.locator('.chat-msg__text', { hasText: args.expect }).first().waitFor();
    });
  }

  if (args.muc) {
    await timed('muc', async () => {
      await page.evaluate(([jid, nick]) => window.lxmppHarness.api.rooms.open(jid, { nick }, true), [args.muc, args.nick]);
      const room = page.locator(`converse-muc[jid="${args.muc}"]`);
      const box = room.locator('textarea.chat-textarea');
      await box.waitFor();
      await box.fill(args['muc-say']);
      await box.press('Enter');
      await room.locator('.chat-msg__text', { hasText: exactly(args['muc-say']) }).first().waitFor();
      await room.locator('.chat-msg__text', { hasText: args['muc-expect'] }).first().waitFor();
    });
  }

  if (args.screenshot) {
    await timed('screenshot', async () => {
      await page.waitForTimeout(300);              // (lets the last message's fade-in end)
      await page.screenshot({ path: args.screenshot });
    });
  }

  step = 'offsite';
  if (offsite.length) throw new Error(`the page asked for other hosts: ${offsite.join(' ')}`);
  if (pageErrors.length) console.error(`converse_drive: page errors (not fatal): ${pageErrors.join(' | ')}`);
  return 0;
}

let code;
try {
  code = await run();
  console.log('converse_drive: all steps passed');
} catch (e) {
  code = fail(e && e.message ? e.message.split('\n').slice(0, 6).join(' / ') : String(e));
}
clearTimeout(overall);
try { await browser?.close(); } catch { /* the process ends anyway */ }
rmSync(profile, { recursive: true, force: true });
process.exit(code);
