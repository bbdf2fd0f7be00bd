// The webmail UI's pure text helpers (src/webmail/ui/text.ts): links in plain text, quoting,
// subjects and recipients of replies and forwards. No browser needed.
import { describe, expect, it } from 'vitest';
import type { MessageView } from '../../src/webmail/api-types.ts';
import { forwardDraft, forwardSubject, formatAddress, linkify, quoteText, replyDraft, replySubject } from '../../src/webmail/ui/text.ts';

const message = (over: Partial<MessageView> = {}): MessageView => ({
  uid: 7,
  from: [{ name: 'Bob', address: 'bob@example.test' }],
  to: [{ name: 'Alice', address: 'alice@example.test' }, { name: '', address: 'carol@example.org' }],
  cc: [{ name: 'Dave', address: 'dave@example.org' }, { name: '', address: 'ALICE@example.test' }],
  replyTo: [],
  subject: 'Plans',
  date: Date.UTC(2024, 2, 5, 14, 3),
  flags: [],
  size: 100,
  hasAttachments: false,
  messageId: '<m2@example.test>',
  inReplyTo: '<m1@example.test>',
  references: ['<m1@example.test>'],
  text: 'Line one\n> earlier\n\nLine three\n',
  hasHtml: false,
  hasRemoteContent: false,
  attachments: [],
  ...over,
});

describe('linkify', () => {
  it('links http(s), www and mailto only, and keeps markup as text', () => {
    const tokens = linkify('see <b>https://example.org/a?b=1</b> or javascript:alert(1) or data:text/html,x www.example.com. mailto:a@b.c');
    expect(tokens.filter((t) => t.kind === 'link').map((t) => (t.kind === 'link' ? t.href : ''))).toEqual(['https://example.org/a?b=1', 'https://www.example.com', 'mailto:a@b.c']);
    expect(tokens.map((t) => t.text).join('')).toBe('see <b>https://example.org/a?b=1</b> or javascript:alert(1) or data:text/html,x www.example.com. mailto:a@b.c');
  });

  it('leaves sentence punctuation and unbalanced parentheses out of the link', () => {
    const links = (s: string) => linkify(s).flatMap((t) => (t.kind === 'link' ? [t.text] : []));
    expect(links('(see https://example.org/x).')).toEqual(['https://example.org/x']);
    expect(links('https://en.wikipedia.org/wiki/Foo_(bar), ok')).toEqual(['https://en.wikipedia.org/wiki/Foo_(bar)']);
    expect(links('"https://example.org/q"')).toEqual(['https://example.org/q']);
  });
});

describe('replies and forwards', () => {
  it('prefixes Re: and Fwd: once', () => {
    expect(replySubject('Plans')).toBe('Re: Plans');
    expect(replySubject('RE: Plans')).toBe('RE: Plans');
    expect(forwardSubject('Plans')).toBe('Fwd: Plans');
    expect(forwardSubject('Fw: Plans')).toBe('Fw: Plans');
  });

  it('quotes every line with "> " and quoted lines with ">"', () => {
    expect(quoteText('a\r\n> b\n\nc\n\n')).toBe('> a\n>> b\n> \n> c');
  });

  it('quotes names that need it', () => {
    expect(formatAddress({ name: 'Doe, Jane', address: 'j@d.example' })).toBe('"Doe, Jane" <j@d.example>');
    expect(formatAddress({ name: 'Jane Doe', address: 'j@d.example' })).toBe('Jane Doe <j@d.example>');
    expect(formatAddress({ name: '', address: 'j@d.example' })).toBe('j@d.example');
  });

  it('replies to the sender (or Reply-To), threaded, quoting the text', () => {
    const d = replyDraft(message(), 'INBOX', 'alice@example.test', false);
    expect(d.to).toBe('Bob <bob@example.test>');
    expect(d.cc).toBe('');
    expect(d.subject).toBe('Re: Plans');
    expect(d.inReplyTo).toBe('<m2@example.test>');
    expect(d.references).toEqual(['<m1@example.test>', '<m2@example.test>']);
    expect(d.text).toMatch(/^\n\nOn .*2024.*, Bob wrote:\n> Line one\n>> earlier\n> \n> Line three\n$/);
    expect(d.answers).toEqual({ folder: 'INBOX', uid: 7 });
    expect(replyDraft(message({ replyTo: [{ name: 'List', address: 'list@example.org' }] }), 'INBOX', 'alice@example.test', false).to).toBe('List <list@example.org>');
  });

  it('replies to all without including myself', () => {
    const d = replyDraft(message(), 'INBOX', 'alice@example.test', true);
    expect(d.to).toBe('Bob <bob@example.test>, carol@example.org');
    expect(d.cc).toBe('Dave <dave@example.org>');
  });

  it('forwards inline with the original headers, or as an attachment', () => {
    const inline = forwardDraft(message(), 'INBOX', false);
    expect(inline.subject).toBe('Fwd: Plans');
    expect(inline.text).toContain('---------- Forwarded message ----------\nFrom: Bob <bob@example.test>');
    expect(inline.text).toContain('Line one');
    expect(inline.forwardOf).toBeUndefined();
    const attached = forwardDraft(message(), 'Lists/x', true);
    expect(attached.forwardOf).toEqual({ folder: 'Lists/x', uid: 7 });
    expect(attached.inReplyTo).toBeUndefined();
  });
});
