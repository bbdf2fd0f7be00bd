import { describe, expect, it } from 'vitest';
import { CommandPacer, ConnectionCounter } from '../../src/core/limits.ts';

describe('ConnectionCounter', () => {
  it('caps connections per key and frees a slot on release', () => {
    const c = new ConnectionCounter(2);
    expect(c.acquire('192.0.2.1')).toBe(true);
    expect(c.acquire('192.0.2.1')).toBe(true);
    expect(c.acquire('192.0.2.1')).toBe(false);
    expect(c.acquire('2001:db8::1')).toBe(true); // other hosts are not affected
    expect(c.count('192.0.2.1')).toBe(2);
    c.release('192.0.2.1');
    expect(c.acquire('192.0.2.1')).toBe(true);
    expect(c.total).toBe(3);
  });

  it('caps the total, and a refused acquire takes nothing', () => {
    const c = new ConnectionCounter({ maxPerKey: 10, maxTotal: 2 });
    expect(c.acquire('a')).toBe(true);
    expect(c.acquire('b')).toBe(true);
    expect(c.acquire('c')).toBe(false);
    expect(c.count('c')).toBe(0);
    c.release('a');
    expect(c.acquire('c')).toBe(true);
  });

  it('forgets keys at zero and ignores a release without an acquire', () => {
    const c = new ConnectionCounter(1);
    c.release('never-seen');
    expect(c.total).toBe(0);
    expect(c.acquire('x')).toBe(true);
    c.release('x');
    c.release('x');
    expect([c.count('x'), c.total]).toEqual([0, 0]);
  });
});

describe('CommandPacer', () => {
  it('lets a burst up to the limit through, then spaces the rest a second apart per batch', () => {
    let now = 10_000;
    const p = new CommandPacer(3, () => now);
    expect([p.next(), p.next(), p.next()]).toEqual([0, 0, 0]);
    expect(p.next()).toBe(1000);
    now += 1000;
    expect([p.next(), p.next()]).toEqual([0, 0]);
    expect(p.next()).toBe(1000);
    now += 5000;
    expect(p.next()).toBe(0);
  });
});
