import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { describe, expect, it } from 'vitest';
import { shaCrypt } from '../../src/config/sha-crypt.ts';
import { UsersFile, hashPassword, parseUsers, verifyPassword } from '../../src/config/users.ts';
import { tempDir } from './helpers.ts';

describe('hashPassword / verifyPassword', () => {
  it('hashes with argon2id (OWASP parameters) and verifies', async () => {
    const hash = await hashPassword('correct horse');
    expect(hash).toMatch(/^\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    expect(await verifyPassword('correct horse', hash)).toBe(true);
    expect(await verifyPassword('correct horsE', hash)).toBe(false);
    expect(await hashPassword('correct horse')).not.toBe(hash); // salted
  });

  it('verifies {ARGON2I} and refuses absurd parameters', async () => {
    const argon2id = await hashPassword('pw');
    // same shape, other variant: must not verify against the argon2id key
    expect(await verifyPassword('pw', argon2id.replace('{ARGON2ID}$argon2id', '{ARGON2I}$argon2i'))).toBe(false);
    expect(await verifyPassword('pw', argon2id.replace('m=19456', 'm=99999999'))).toBe(false);
  });

  // Vectors from Drepper's "Unix crypt using SHA-256 and SHA-512" (the glibc test suite)
  const SHA256_VECTORS: Array<[string, string, string]> = [
    ['$5$saltstring', 'Hello world!', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
    ['$5$rounds=10000$saltstringsaltstring', 'Hello world!', '$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA'],
    ['$5$rounds=5000$toolongsaltstring', 'This is just a test', '$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5'],
    ['$5$rounds=1400$anotherlongsaltstring', 'a very much longer text to encrypt.  This one even stretches over morethan one line.', '$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1'],
    ['$5$rounds=77777$short', 'we have a short salt string but not a short password', '$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/'],
    ['$5$rounds=10$roundstoolow', 'the minimum number is still observed', '$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC'],
  ];
  const SHA512_VECTORS: Array<[string, string, string]> = [
    ['$6$saltstring', 'Hello world!', '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'],
    ['$6$rounds=10000$saltstringsaltstring', 'Hello world!', '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.'],
    ['$6$rounds=5000$toolongsaltstring', 'This is just a test', '$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0'],
  ];

  it('computes SHA256-CRYPT per the spec vectors and verifies {SHA256-CRYPT}', async () => {
    for (const [setting, password, expected] of SHA256_VECTORS) {
      expect(await shaCrypt(password, setting)).toBe(expected);
      expect(await verifyPassword(password, `{SHA256-CRYPT}${expected}`)).toBe(true);
      expect(await verifyPassword(password + 'x', `{SHA256-CRYPT}${expected}`)).toBe(false);
    }
  });

  it('computes SHA512-CRYPT per the spec vectors and verifies {SHA512-CRYPT}', async () => {
    for (const [setting, password, expected] of SHA512_VECTORS) {
      expect(await shaCrypt(password, setting)).toBe(expected);
      expect(await verifyPassword(password, `{SHA512-CRYPT}${expected}`)).toBe(true);
      expect(await verifyPassword('wrong', `{SHA512-CRYPT}${expected}`)).toBe(false);
    }
    // a $5$ hash under the SHA512 label is not accepted
    expect(await verifyPassword('Hello world!', `{SHA512-CRYPT}${SHA256_VECTORS[0][2]}`)).toBe(false);
  });

  it('verifies {BLF-CRYPT} bcrypt, including the $2y$ prefix Dovecot writes', async () => {
    const hash2b = bcrypt.hashSync('s3cret', 4);
    expect(await verifyPassword('s3cret', `{BLF-CRYPT}${hash2b}`)).toBe(true);
    expect(await verifyPassword('s3cret', `{BLF-CRYPT}${hash2b.replace(/^\$2b\$/, '$2y$')}`)).toBe(true);
    expect(await verifyPassword('other', `{BLF-CRYPT}${hash2b}`)).toBe(false);
  });

  it('verifies its own {SCRYPT} format', async () => {
    const { scryptSync, randomBytes } = await import('node:crypto');
    const salt = randomBytes(16);
    const key = scryptSync('pw', salt, 32, { N: 2 ** 10, r: 8, p: 1 });
    const stored = `{SCRYPT}$scrypt$ln=10,r=8,p=1$${salt.toString('base64')}$${key.toString('base64')}`;
    expect(await verifyPassword('pw', stored)).toBe(true);
    expect(await verifyPassword('px', stored)).toBe(false);
  });

  it('never accepts plaintext, unknown schemes or garbage', async () => {
    for (const stored of ['{PLAIN}pw', '{CLEAR}pw', '{plain}pw', 'pw', '', '{MD5-CRYPT}$1$abc$def', '{ARGON2ID}$argon2id$nonsense', '{SHA512-CRYPT}$6$x']) {
      expect(await verifyPassword('pw', stored)).toBe(false);
    }
  });
});

describe('parseUsers', () => {
  it('reads users with comments, blank lines, extra fields; lower-cases keys; refuses plaintext', () => {
    const text = [
      '# the family',
      '',
      'Alice@Example.ORG:{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA:1000:1000:Alice:/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G',
      '   # indented comment',
      'bob@example.org:{PLAIN}hunter2',
      'carol@example.org:plainpassword::::::',
      'nope-no-domain:{ARGON2ID}x',
      'dave@example.org',
      'ALICE@example.org:{SHA512-CRYPT}$6$x$y',
      'eve@exa mple.org:{ARGON2ID}x',
    ].join('\n');
    const { users, problems } = parseUsers(text, 'config/users');
    expect([...users.keys()]).toEqual(['alice@example.org', 'bob@example.org', 'carol@example.org']);
    const alice = users.get('alice@example.org')!;
    expect(alice).toMatchObject({ user: 'alice', domain: 'example.org', rest: ['1000', '1000', 'Alice', '/home/alice', '/bin/sh', 'userdb_quota_rule=*', 'storage=1G'] });
    expect(alice.hash.startsWith('{ARGON2ID}')).toBe(true);
    expect(alice.disabled).toBeUndefined();
    expect(users.get('bob@example.org')!.disabled).toMatch(/plaintext/);
    expect(problems).toHaveLength(6);
    expect(problems[0]).toBe('config/users:5: user bob@example.org has a plaintext password ({PLAIN}), which hearth refuses; the user cannot log in: run `hearth user passwd bob@example.org` to set a hashed password');
    expect(problems[1]).toMatch(/^config\/users:6: .*carol@example.org.*no \{SCHEME\} prefix.*hearth user passwd carol@example.org/);
    expect(problems[2]).toMatch(/^config\/users:7: "nope-no-domain" is not an address/);
    expect(problems[3]).toMatch(/^config\/users:8: user dave@example.org has no password field/);
    expect(problems[4]).toMatch(/^config\/users:9: user alice@example.org is listed again; the first line wins/);
    expect(problems[5]).toMatch(/^config\/users:10: .*"exa mple.org" is not a domain name/);
  });

  it('refuses addresses that could escape a path or break the format', () => {
    for (const bad of ['../x@example.org', 'a..b@example.org', 'a/b@example.org', '.a@example.org', 'a\u0001@example.org', 'a@exa_mple.org', 'a@example..org']) {
      const { users, problems } = parseUsers(`${bad}:{ARGON2ID}x`, 'users');
      expect(users.size, bad).toBe(0);
      expect(problems, bad).toHaveLength(1);
    }
  });
});

describe('UsersFile', () => {
  it('adds, changes and removes users, keeping comments and other lines as written, mode 0600', async () => {
    const dir = await tempDir();
    const path = join(dir, 'users');
    const other = 'zed@example.org:{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1:1000:1000::/home/zed::quota=1G';
    await writeFile(path, `# users of example.org\n\n${other}\n# end\n`, { mode: 0o644 });
    const users = new UsersFile(path);

    await users.add('Me@Example.org', 'first-pw');
    let text = await readFile(path, 'utf8');
    expect(text.startsWith(`# users of example.org\n\n${other}\n# end\nme@example.org:{ARGON2ID}$argon2id$`)).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await expect(users.add('me@example.org', 'again')).rejects.toMatchObject({ code: 'USER_EXISTS' });

    // setPassword keeps the extra fields of that line
    await users.setPassword('ZED@example.org', 'new-zed-pw');
    text = await readFile(path, 'utf8');
    const zed = text.split('\n').find((l) => l.startsWith('zed@'))!;
    expect(zed).toMatch(/^zed@example\.org:\{ARGON2ID\}\$argon2id\$[^:]+:1000:1000::\/home\/zed::quota=1G$/);
    const list = await users.list();
    expect(list.map((u) => u.address)).toEqual(['zed@example.org', 'me@example.org']);
    expect(await verifyPassword('new-zed-pw', list[0].hash)).toBe(true);
    expect(await verifyPassword('first-pw', list[1].hash)).toBe(true);

    await users.remove('me@example.org');
    text = await readFile(path, 'utf8');
    expect(text).toBe(`# users of example.org\n\n${zed}\n# end\n`);
    expect((await stat(path)).mode & 0o777).toBe(0o600);

    await expect(users.remove('me@example.org')).rejects.toMatchObject({ code: 'USER_UNKNOWN' });
    await expect(users.setPassword('nobody@example.org', 'x')).rejects.toMatchObject({ code: 'USER_UNKNOWN' });
  });

  it('creates the file on first add and validates addresses and passwords', async () => {
    const dir = await tempDir();
    const users = new UsersFile(join(dir, 'users'));
    expect(await users.list()).toEqual([]);
    for (const bad of ['no-at-sign', 'a..b@example.org', 'a/b@example.org', 'a:b@example.org', 'a b@example.org', 'a@bad_domain', 'tab\t@example.org']) {
      await expect(users.add(bad, 'pw'), bad).rejects.toMatchObject({ code: 'USER_ADDRESS_INVALID' });
    }
    await expect(users.add('ok@example.org', '')).rejects.toMatchObject({ code: 'USER_PASSWORD_INVALID' });
    await users.add('ok@example.org', 'pw');
    expect((await users.list()).map((u) => u.address)).toEqual(['ok@example.org']);
    expect((await stat(join(dir, 'users'))).mode & 0o777).toBe(0o600);
  });

  it('serializes concurrent adds without losing one', async () => {
    const dir = await tempDir();
    const users = new UsersFile(join(dir, 'users'));
    await Promise.all(['a', 'b', 'c', 'd'].map((n) => users.add(`${n}@example.org`, 'pw')));
    expect((await users.list()).map((u) => u.address).sort()).toEqual(['a@example.org', 'b@example.org', 'c@example.org', 'd@example.org']);
  });

  it('lets passwd fix a user disabled for a plaintext password', async () => {
    const dir = await tempDir();
    const path = join(dir, 'users');
    await writeFile(path, 'bob@example.org:{PLAIN}hunter2\n');
    const users = new UsersFile(path);
    await users.setPassword('bob@example.org', 'hashed-now');
    const [bob] = await users.list();
    expect(bob.disabled).toBeUndefined();
    expect(await verifyPassword('hashed-now', bob.hash)).toBe(true);
  });
});
