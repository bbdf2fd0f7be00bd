import { describe, expect, it } from 'vitest';
import { parseAliases } from '../../src/config/aliases.ts';

describe('parseAliases', () => {
  it('reads aliases, multiple targets, catch-alls and comments', () => {
    const { aliases, problems } = parseAliases(
      [
        '# aliases',
        'Postmaster@Example.org: me@example.org',
        'family@example.org: me@example.org, Partner@Elsewhere.NET ,kid@example.org',
        '',
        '@example.org: me@example.org',
        '  # done',
      ].join('\n'),
      'config/aliases',
    );
    expect(problems).toEqual([]);
    expect(aliases.get('postmaster@example.org')).toEqual(['me@example.org']);
    // remote user parts keep their case; domains are lower-cased
    expect(aliases.get('family@example.org')).toEqual(['me@example.org', 'Partner@elsewhere.net', 'kid@example.org']);
    expect(aliases.get('@example.org')).toEqual(['me@example.org']);
  });

  it('lists problems with file:line and keeps the good lines', () => {
    const { aliases, problems } = parseAliases(
      ['no colon here', 'a@example.org: b@example.org, not-an-address, c@example.org', 'x/y@example.org: me@example.org', '@bad_domain: me@example.org', 'empty@example.org:', 'a@example.org: dup@example.org'].join('\n'),
      'aliases',
    );
    expect(aliases.get('a@example.org')).toEqual(['b@example.org', 'c@example.org']);
    expect(aliases.size).toBe(1);
    expect(problems).toHaveLength(6);
    expect(problems[0]).toMatch(/^aliases:1: no ":"/);
    expect(problems[1]).toMatch(/^aliases:2: target "not-an-address" is not an address.*skipped/);
    expect(problems[2]).toMatch(/^aliases:3: alias "x\/y@example.org"/);
    expect(problems[3]).toMatch(/^aliases:4: catch-all "@bad_domain"/);
    expect(problems[4]).toMatch(/^aliases:5: empty@example.org has no valid target/);
    expect(problems[5]).toMatch(/^aliases:6: a@example.org is listed again/);
  });
});
