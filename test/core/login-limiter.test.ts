import { describe, expect, it } from 'vitest';
import { LoginLimiter } from '../../src/core/login-limiter.ts';

describe('LoginLimiter', () => {
  it('slows each failure down more, up to a cap', () => {
    let now = 0;
    const l = new LoginLimiter({ baseDelayMs: 100, maxDelayMs: 1000, maxFailuresPerAddress: 100, now: () => now });
    const delays = Array.from({ length: 6 }, () => l.failure('192.0.2.1', 'a@x'));
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000]);
    now += 1;
    expect(l.check('192.0.2.1', 'a@x')).toEqual({ allowed: true });
  });

  it('locks an address out after too many failures, for the lockout time only', () => {
    let now = 0;
    const l = new LoginLimiter({ maxFailuresPerAddress: 3, lockoutMs: 60_000, windowMs: 60_000, now: () => now });
    for (let i = 0; i < 3; i++) l.failure('192.0.2.1');
    expect(l.check('192.0.2.1')).toEqual({ allowed: false, retryAfterMs: 60_000, reason: 'address' });
    expect(l.check('192.0.2.2')).toEqual({ allowed: true });
    now += 60_001;
    expect(l.check('192.0.2.1').allowed).toBe(true);
  });

  it('locks an account guessed from many addresses', () => {
    const l = new LoginLimiter({ maxFailuresPerAccount: 4, maxFailuresPerAddress: 100, now: () => 0 });
    for (let i = 0; i < 4; i++) l.failure(`198.51.100.${i}`, 'Victim@Example.org');
    const v = l.check('203.0.113.9', 'victim@example.org');
    expect(v.allowed).toBe(false);
    expect(v.allowed === false && v.reason).toBe('account');
  });

  it('forgets old failures after the window and clears an address on success', () => {
    let now = 0;
    const l = new LoginLimiter({ baseDelayMs: 100, windowMs: 1000, now: () => now });
    l.failure('192.0.2.1');
    l.failure('192.0.2.1');
    now += 1001;
    expect(l.failure('192.0.2.1')).toBe(100);
    l.success('192.0.2.1');
    expect(l.failure('192.0.2.1')).toBe(100);
  });
});
