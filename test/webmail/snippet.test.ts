// The one line a collapsed message of a conversation shows: what its sender wrote.
import { describe, expect, it } from 'vitest';
import { snippetOf } from '../../src/webmail/listing.ts';

describe('snippetOf', () => {
  it('skips the quote and its attribution line, in any language, with or without a blank line', () => {
    expect(snippetOf('Sounds good.\n\nOn Mon, 2 Mar 2026, Ann wrote:\n> Lunch?\n> Ann')).toBe('Sounds good.');
    expect(snippetOf('Gern!\r\n\r\nAm 2. März schrieb Ann <ann@x.example>:\r\n\r\n> Mittag?')).toBe('Gern!');
    expect(snippetOf('> earlier\n> text\nMy answer below the quote.')).toBe('My answer below the quote.');
  });

  it('keeps a line ending in a colon that introduces the writer\'s own text', () => {
    expect(snippetOf('Here is the plan:\n1. pack\n2. drive')).toBe('Here is the plan: 1. pack 2. drive');
  });

  it('stops at the signature and folds white space', () => {
    expect(snippetOf('Yes,\n   see   you\tthere.\n-- \nBob\nBob Ltd')).toBe('Yes, see you there.');
    expect(snippetOf('Yes.\n--\nBob')).toBe('Yes.');
  });

  it('cuts a long text at 160 characters with an ellipsis', () => {
    const s = snippetOf('word '.repeat(200));
    expect(s.length).toBe(160);
    expect(s.endsWith('…')).toBe(true);
    expect(snippetOf('')).toBe('');
  });
});
