// SRS0 as postsrsd writes it: the vector from postsrsd's own unit test, round trips, tampering,
// expiry (and the 1024-day wrap of the timestamp), secret rotation, and the secret file.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Srs, isSrsLocalPart, loadSrsSecrets } from '../../src/smtp/srs.ts';

const DAY = 86_400_000;
// postsrsd tests/unit/test_srs2.c: faketime 1577836860 (2020-01-01 00:01:00 UTC), secret "tops3cr3t".
const POSTSRSD_NOW = 1_577_836_860_000;

describe('Srs', () => {
  it('writes and reads the same addresses as postsrsd', () => {
    const srs = new Srs({ secrets: ['tops3cr3t'], now: () => POSTSRSD_NOW });
    expect(srs.forward('test@otherdomain.com', 'example.com')).toBe('SRS0=vmyz=2W=otherdomain.com=test@example.com');
    expect(srs.reverse('SRS0=vmyz=2W=otherdomain.com=test@example.com')).toEqual({ ok: true, address: 'test@otherdomain.com' });
    // postsrsd leaves senders of its own domain alone; the null sender has nothing to rewrite.
    expect(srs.forward('test@example.com', 'example.com')).toBe('test@example.com');
    expect(srs.forward('', 'example.com')).toBe('');
    expect(() => srs.forward('no-domain', 'example.com')).toThrow(/without a domain/);
  });

  it('round-trips odd local parts, and tolerates case folding of the whole address', () => {
    const srs = new Srs({ secrets: ['s3cret'], now: () => Date.UTC(2026, 4, 1) });
    for (const sender of ['a=b=c@x.example', 'First.Last+tag@Sub.Example.ORG', 'SRS0=abcd=XY=inner.example=u@other.example']) {
      const rewritten = srs.forward(sender, 'our.example');
      expect(rewritten).toMatch(/^SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=/);
      expect(rewritten.endsWith('@our.example')).toBe(true);
      expect(srs.reverse(rewritten)).toEqual({ ok: true, address: sender });
      const folded = srs.reverse(rewritten.toLowerCase());
      expect(folded.ok && folded.address).toBe(sender.toLowerCase());
    }
  });

  it('refuses tampered, foreign and malformed addresses', () => {
    const srs = new Srs({ secrets: ['s3cret'], now: () => Date.UTC(2026, 4, 1) });
    const good = srs.forward('alice@sender.example', 'our.example');
    const [, hash, stamp] = good.split('=');
    const cases = [
      good.replace('alice@', 'mallory@'),
      good.replace('=sender.example=', '=evil.example='),
      good.replace(`=${stamp}=`, `=${stamp === 'AA' ? 'AB' : 'AA'}=`),
      good.replace(`SRS0=${hash}`, `SRS0=${hash[0].toLowerCase() === 'q' ? 'z' : 'q'}${hash.slice(1)}`),
      new Srs({ secrets: ['other'], now: () => Date.UTC(2026, 4, 1) }).forward('alice@sender.example', 'our.example'),
    ];
    for (const c of cases) expect(srs.reverse(c), c).toMatchObject({ ok: false, reason: expect.stringMatching(/hash|timestamp/) });
    expect(srs.reverse('SRS0=abcd=1!=x.example=a@our.example')).toMatchObject({ ok: false });
    expect(srs.reverse('SRS0=abcd@our.example')).toEqual({ ok: false, reason: 'malformed SRS0 address' });
    expect(srs.reverse('SRS1=abcd=fwd.example==efgh=AA=x.example=a@our.example')).toEqual({ ok: false, reason: 'only SRS0 addresses are issued here' });
    expect(srs.reverse('alice@our.example')).toEqual({ ok: false, reason: 'not an SRS address' });
    expect(isSrsLocalPart('srs0=x')).toBe(true);
    expect(isSrsLocalPart('SRS0+x')).toBe(true);
    expect(isSrsLocalPart('srs0x')).toBe(false);
    expect(isSrsLocalPart('srsly')).toBe(false);
  });

  it('expires addresses after maxAgeDays, also across the 1024-day wrap of the timestamp', () => {
    let now = Date.UTC(2026, 4, 1);
    const srs = new Srs({ secrets: ['s3cret'], maxAgeDays: 21, now: () => now });
    const a = srs.forward('alice@sender.example', 'our.example');
    now += 21 * DAY;
    expect(srs.reverse(a)).toEqual({ ok: true, address: 'alice@sender.example' });
    now += DAY;
    expect(srs.reverse(a)).toEqual({ ok: false, reason: 'older than 21 days' });

    // Day 1023 of a 1024-day cycle, checked 5 days later (day 4 of the next cycle).
    now = 1023 * DAY + 12 * 3_600_000;
    const wrapped = srs.forward('bob@sender.example', 'our.example');
    expect(wrapped).toContain('=77=');
    now += 5 * DAY;
    expect(srs.reverse(wrapped)).toEqual({ ok: true, address: 'bob@sender.example' });
  });

  it('signs with the first secret and verifies with every one (rotation)', () => {
    const now = () => Date.UTC(2026, 4, 1);
    const old = new Srs({ secrets: ['old-secret'], now }).forward('a@x.example', 'our.example');
    const rotated = new Srs({ secrets: ['new-secret', 'old-secret'], now });
    expect(rotated.reverse(old)).toEqual({ ok: true, address: 'a@x.example' });
    const fresh = rotated.forward('a@x.example', 'our.example');
    expect(fresh).not.toBe(old);
    expect(new Srs({ secrets: ['new-secret'], now }).reverse(fresh).ok).toBe(true);
    expect(() => new Srs({ secrets: [] })).toThrow(/at least one secret/);
  });
});

describe('loadSrsSecrets', () => {
  it('makes a 0600 secret on first use, the same one for concurrent callers, and reads comments and rotation lines', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-srs-'));
    try {
      const file = join(dir, 'srs.secret');
      const [a, b] = await Promise.all([loadSrsSecrets(file), loadSrsSecrets(file)]);
      expect(a).toEqual(b);
      expect(a[0]).toMatch(/^[A-Za-z0-9+/]{24}$/);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(await loadSrsSecrets(file)).toEqual(a);
      expect((await readFile(file, 'utf8')).trim()).toBe(a[0]);
      await writeFile(file, '# rotated 2026-05\nnew-one\n\nold-one\n');
      expect(await loadSrsSecrets(file)).toEqual(['new-one', 'old-one']);
      await writeFile(file, '# nothing\n');
      await expect(loadSrsSecrets(file)).rejects.toMatchObject({ code: 'SRS_NO_SECRET' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
