// A second, independent client: Python's imaplib over plain text, STARTTLS and implicit TLS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPython } from '../helpers/python.ts';
import type { TestSetup } from '../helpers/hearth.ts';
import { deliver, startImapHearth } from './imap-helpers.ts';
import type { Running } from './imap-helpers.ts';

const IMAPLIB_SESSION = `
import imaplib, ssl, sys, json
port, mode, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
if mode == "ssl":
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=10)
else:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    if mode == "starttls":
        m.starttls(ssl_context=ctx)
out = {"caps": list(m.capabilities)}
out["login"] = m.login(user, pw)[0]
typ, data = m.list()
out["list"] = [d.decode() for d in data]
typ, data = m.select("INBOX")
out["exists"] = int(data[0])
typ, data = m.search(None, "ALL")
out["search"] = data[0].decode()
typ, data = m.fetch("1", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["fetch_meta"] = data[0][0].decode()
out["fetch_subject"] = data[0][1].decode().strip()
typ, data = m.fetch("1", "(RFC822)")
out["rfc822"] = data[0][1].decode("latin1")
typ, data = m.store("1", "+FLAGS", "(\\\\Flagged)")
out["store"] = data[0].decode()
typ, data = m.append("INBOX", "(\\\\Seen)", imaplib.Time2Internaldate(1700000000), b"Subject: from imaplib\\r\\n\\r\\nhi\\r\\n")
out["append"] = [typ, data[0].decode()]
typ, data = m.uid("SEARCH", None, "SUBJECT", '"from imaplib"')
out["uid_search"] = data[0].decode()
typ, data = m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
out["status"] = data[0].decode()
m.close()
out["logout"] = m.logout()[0]
print(json.dumps(out))
`;

type Result = {
  caps: string[];
  login: string;
  list: string[];
  exists: number;
  search: string;
  fetch_meta: string;
  fetch_subject: string;
  rfc822: string;
  store: string;
  append: [string, string];
  uid_search: string;
  status: string;
  logout: string;
};

describe('IMAP with Python imaplib', () => {
  let setup: TestSetup;
  let hearth: Running;

  beforeAll(async () => {
    ({ setup, hearth } = await startImapHearth());
    await deliver(hearth.smtpPort, 'alice@example.test', 'for imaplib', 'Python reads this.');
  });
  afterAll(async () => {
    await hearth?.close();
    await setup?.cleanup();
  });

  async function session(port: number, mode: 'plain' | 'starttls' | 'ssl'): Promise<Result> {
    const { stdout } = await runPython(IMAPLIB_SESSION, [String(port), mode, 'alice@example.test', 'alice-password']);
    return JSON.parse(stdout) as Result;
  }

  it('plain: the whole tour, byte-exact RFC822 and an APPENDUID', async () => {
    const r = await session(hearth.port('imap'), 'plain');
    expect(r.caps).toEqual(expect.arrayContaining(['IMAP4REV1', 'STARTTLS', 'AUTH=PLAIN', 'IDLE', 'UIDPLUS']));
    expect(r.login).toBe('OK');
    expect(r.list).toEqual(expect.arrayContaining(['(\\HasNoChildren) "/" "INBOX"', '(\\HasNoChildren \\Sent) "/" "Sent"']));
    expect(r.exists).toBe(1);
    expect(r.search).toBe('1');
    expect(r.fetch_meta).toMatch(/^1 \(UID \d+ FLAGS \(.*\) RFC822\.SIZE \d+ BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\}$/);
    expect(r.fetch_subject).toBe('Subject: for imaplib');
    expect(r.rfc822).toContain('\r\nSubject: for imaplib\r\n');
    expect(r.rfc822).toContain('Python reads this.');
    const size = Number(/RFC822\.SIZE (\d+)/.exec(r.fetch_meta)![1]);
    expect(Buffer.byteLength(r.rfc822, 'latin1')).toBe(size);
    expect(r.store).toMatch(/FLAGS \(.*\\Flagged.*\\Seen|FLAGS \(.*\\Seen.*\\Flagged/);
    expect(r.append[0]).toBe('OK');
    expect(r.append[1]).toMatch(/^\[APPENDUID \d+ \d+\] /);
    expect(r.uid_search).toMatch(/^\d+$/);
    expect(r.status).toMatch(/^"INBOX" \(MESSAGES 2 UNSEEN 0 UIDNEXT \d+\)$/);
    expect(r.logout).toBe('BYE');
  });

  it('STARTTLS: capabilities are asked again and STARTTLS is gone', async () => {
    const r = await session(hearth.port('imap'), 'starttls');
    expect(r.login).toBe('OK');
    expect(r.caps).not.toContain('STARTTLS');
    expect(r.caps).toContain('AUTH=PLAIN');
    expect(r.exists).toBe(2);
  });

  it('implicit TLS (IMAP4_SSL)', async () => {
    const r = await session(hearth.port('imaps'), 'ssl');
    expect(r.login).toBe('OK');
    expect(r.caps).not.toContain('STARTTLS');
    expect(r.exists).toBe(3);
  });
});
