import { describe, expect, it } from 'vitest';
import {
  buildReply,
  envidParam,
  extractEnhanced,
  isSafeAddress,
  mailFromCommand,
  NO_CAPABILITIES,
  notifyParam,
  orcptParam,
  parseEhlo,
  parseReplyLine,
  rcptToCommand,
  xtextEncode,
} from '../../src/smtp/relay-protocol.ts';
import type { ReplyLine, SmtpReply } from '../../src/smtp/relay-protocol.ts';
import { RelayClient, STATES } from '../../src/smtp/relay-client.ts';
import { REPLY_CODE_PATTERN, StateMachine } from '../../src/core/state-machine.ts';

function reply(...raw: string[]): SmtpReply {
  const lines = raw.map((l) => parseReplyLine(l)) as ReplyLine[];
  const r = buildReply(lines);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

describe('relay reply parser', () => {
  it('parses single, continuation and bare reply lines', () => {
    expect(parseReplyLine('250 OK')).toEqual({ code: 250, final: true, text: 'OK' });
    expect(parseReplyLine('250-mx.example hello')).toEqual({ code: 250, final: false, text: 'mx.example hello' });
    expect(parseReplyLine('354')).toEqual({ code: 354, final: true, text: '' });
    expect(parseReplyLine('250 ')).toEqual({ code: 250, final: true, text: '' });
  });

  it('rejects what is not a reply line', () => {
    for (const bad of ['', 'hello', '25 OK', '2500 OK', '650 nope', '150 early', '250:x', 'OK 250']) expect(parseReplyLine(bad), bad).toBeNull();
  });

  it('joins a multi-line reply and strips the enhanced code from every line', () => {
    const r = reply('550-5.1.1 The email account that you tried to reach does not exist.', '550-5.1.1 Please try double-checking', '550 5.1.1 the address.');
    expect(r.code).toBe(550);
    expect(r.enhanced).toBe('5.1.1');
    expect(r.text).toBe('The email account that you tried to reach does not exist. Please try double-checking the address.');
    expect(r.lines).toHaveLength(3);
  });

  it('refuses a reply whose lines disagree on the code', () => {
    expect(buildReply([parseReplyLine('250-a')!, parseReplyLine('550 b')!])).toMatch(/different codes/);
    expect(buildReply([])).toBe('empty reply');
  });

  it('extracts an enhanced code only when its class matches the reply', () => {
    expect(extractEnhanced(451, '4.7.1 greylisted')).toBe('4.7.1');
    expect(extractEnhanced(250, '2.1.5 Ok')).toBe('2.1.5');
    expect(extractEnhanced(550, '4.7.1 mismatched')).toBeUndefined();
    expect(extractEnhanced(550, '5.1.10')).toBe('5.1.10');
    expect(extractEnhanced(250, '2.0.0x')).toBeUndefined();
    expect(extractEnhanced(250, 'ok 2.0.0')).toBeUndefined();
    expect(reply('250 2.0.0').text).toBe('');
  });
});

describe('EHLO keywords', () => {
  it('parses the usual extensions, SIZE and AUTH (both spellings)', () => {
    const caps = parseEhlo(['mx.example Hello', 'PIPELINING', 'SIZE 10240000', '8bitmime', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN', 'STARTTLS', 'AUTH PLAIN login', 'AUTH=CRAM-MD5']);
    expect(caps).toMatchObject({ size: 10_240_000, starttls: true, eightBitMime: true, smtpUtf8: true, pipelining: true, enhancedStatusCodes: true, dsn: true });
    expect(caps.auth).toEqual(['PLAIN', 'LOGIN', 'CRAM-MD5']);
  });

  it('treats a bare or zero SIZE as no limit, and ignores the greeting line', () => {
    expect(parseEhlo(['x', 'SIZE']).size).toBe(0);
    expect(parseEhlo(['x', 'SIZE 0']).size).toBe(0);
    expect(parseEhlo(['x', 'SIZE abc']).size).toBe(0);
    expect(parseEhlo(['STARTTLS greets you']).starttls).toBe(false);
    expect(parseEhlo(['x', 'SIZE 1000']).keywords.has('SIZE')).toBe(true);
  });
});

describe('ESMTP parameters', () => {
  it('xtext-encodes plus, equals, controls and non-ASCII', () => {
    expect(xtextEncode('a+b=c d')).toBe('a+2Bb+3Dc+20d');
    expect(xtextEncode('é')).toBe('+C3+A9');
    expect(envidParam('QQ314159')).toBe('QQ314159');
    expect(envidParam('has space')).toBe('has+20space');
    expect(envidParam('already+2Bencoded')).toBe('already+2Bencoded');
  });

  it('builds ORCPT and NOTIFY values', () => {
    expect(orcptParam('rfc822;bob@example.org')).toBe('rfc822;bob@example.org');
    expect(orcptParam('bob+tag@example.org')).toBe('rfc822;bob+2Btag@example.org');
    expect(orcptParam('rfc822;bob+tag@example.org')).toBe('rfc822;bob+2Btag@example.org');
    expect(notifyParam(['success', 'FAILURE', 'bogus'])).toBe('SUCCESS,FAILURE');
    expect(notifyParam(['NEVER', 'DELAY'])).toBe('NEVER');
    expect(notifyParam(['bogus'])).toBeUndefined();
  });

  it('declares only what the remote offered', () => {
    const caps = parseEhlo(['x', 'SIZE 100000', '8BITMIME', 'SMTPUTF8', 'DSN']);
    const base = { from: 'a@b.example', size: 1234, eightBit: true, smtpUtf8: true, dsn: { ret: 'HDRS' as const, envid: 'id 1' } };
    expect(mailFromCommand({ ...base, caps, esmtp: true })).toBe('MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+201');
    expect(mailFromCommand({ ...base, caps: NO_CAPABILITIES, esmtp: false })).toBe('MAIL FROM:<a@b.example>');
    expect(mailFromCommand({ ...base, from: '', caps: NO_CAPABILITIES, esmtp: true })).toBe('MAIL FROM:<>');
    expect(rcptToCommand('c@d.example', caps, { notify: ['FAILURE', 'DELAY'], orcpt: 'rfc822;c@d.example' })).toBe('RCPT TO:<c@d.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;c@d.example');
    expect(rcptToCommand('c@d.example', NO_CAPABILITIES, { notify: ['FAILURE'] })).toBe('RCPT TO:<c@d.example>');
  });

  it('refuses addresses that could inject commands', () => {
    expect(isSafeAddress('bob@example.org')).toBe(true);
    expect(isSafeAddress('dörte@例え.jp')).toBe(true);
    expect(isSafeAddress('bob@example.org>\r\nRCPT TO:<evil@x')).toBe(false);
    expect(isSafeAddress('a\nb@c')).toBe(false);
  });
});

describe('RelayClient handlers', () => {
  it('names every handler after a known state and a reply code or class', () => {
    expect(StateMachine.checkHandlers(RelayClient.prototype, STATES, REPLY_CODE_PATTERN)).toEqual([]);
  });
});
