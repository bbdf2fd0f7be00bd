// Log lines a person reads: one JSON object per line, each key once. pino writes a binding
// given twice twice ("svc":"index","svc":"index"), so a part that names its own service must
// not be handed a logger already named, and a connection's peer is bound once, not per call.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ImapFlow } from 'imapflow';
import { createLogger } from '../../src/core/log.ts';
import { startHearth } from '../../src/main.ts';
import type { RunningHearth } from '../../src/main.ts';
import { makeSetup } from '../helpers/hearth.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { popLogin, POP_LISTENERS } from '../pop3/pop3-helpers.ts';

/** The keys of a JSON object's top level, in order, repeats kept (JSON.parse would drop them). */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && json[j + 1] === ':') keys.push(JSON.parse(json.slice(i, j + 1)) as string);
      i = j;
    } else if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth--;
  }
  return keys;
}

let setup: TestSetup;
let hearth: RunningHearth;
const raw: string[] = [];
const port = (service: string) => hearth.endpoints.find((e) => e.service === service)!.port;

beforeAll(async () => {
  setup = await makeSetup({ toml: `${POP_LISTENERS}[listeners.imap]\nlisten = "127.0.0.1:0"\ntls = "starttls"\n` });
  hearth = await startHearth({ configDir: setup.configDir, log: createLogger('debug', { write: (s: string) => void raw.push(s) }) });
});
afterAll(async () => {
  await hearth?.close();
  await setup?.cleanup();
});

it('writes every key once on every line: a delivery, a POP3 and an IMAP session, and the store under them', async () => {
  const smtp = await RawSmtp.connect(port('smtp'));
  expect(await smtp.reply()).toMatch(/^220 /);
  expect(await smtp.command('EHLO client.example')).toMatch(/^250/);
  expect(await smtp.command('MAIL FROM:<a@remote.example>')).toMatch(/^250/);
  expect(await smtp.command('RCPT TO:<alice@example.test>')).toMatch(/^250/);
  expect(await smtp.command('DATA')).toMatch(/^354/);
  expect(await smtp.command('Subject: hi\r\n\r\nhello\r\n.')).toMatch(/^250/);
  await smtp.command('QUIT');
  const pop = await popLogin(port('pop3'));
  expect(await pop.command('STAT')).toMatch(/^\+OK 1 /);
  await pop.command('QUIT');
  const imap = new ImapFlow({ host: '127.0.0.1', port: port('imap'), secure: false, auth: { user: 'alice@example.test', pass: 'alice-password' }, logger: false, tls: { rejectUnauthorized: false } });
  await imap.connect();
  await imap.mailboxOpen('INBOX');
  await imap.logout();
  await hearth.close();

  const messages = raw.map((line) => (JSON.parse(line) as { msg: string }).msg);
  // The lines this test is about are there (so the check below had something to check).
  for (const msg of ['message delivered', 'logged in', 'mailbox index created']) expect(messages).toContain(msg);
  const repeated = raw.flatMap((line) => {
    const keys = topLevelKeys(line);
    const twice = keys.filter((k, i) => keys.indexOf(k) !== i);
    return twice.length ? [`${twice.join(', ')} in ${line.trim()}`] : [];
  });
  expect(repeated).toEqual([]);
});
