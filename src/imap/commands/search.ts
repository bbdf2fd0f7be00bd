// SEARCH and UID SEARCH (RFC 3501 6.4.4, 6.4.8; CHARSET with NO [BADCHARSET]; MODSEQ RFC 7162
// 3.1.5). Evaluation is search-eval.ts's; this file builds its context from the session's view
// (with the user's full-text index as the prefilter for text keys, when the store keeps one)
// and formats the answer. Each message that must be checked is read once.
import { StoreError } from '../../store/names.ts';
import { userSearch } from '../../store/user-search.ts';
import type { CommandOf, SearchKey } from '../parse.ts';
import { evaluateSearch, fullTextCandidates, searchCharsetSupported } from '../search-eval.ts';
import type { SearchContext, SearchMessage } from '../search-eval.ts';
import type { ImapSession } from '../session.ts';

function usesModseq(key: SearchKey): boolean {
  switch (key.key) {
    case 'MODSEQ':
      return true;
    case 'NOT':
      return usesModseq(key.inner);
    case 'OR':
      return usesModseq(key.left) || usesModseq(key.right);
    case 'AND':
      return key.keys.some(usesModseq);
    default:
      return false;
  }
}

export async function do_SELECTED_SEARCH(this: ImapSession, cmd: CommandOf<'SEARCH'>): Promise<void> {
  const view = this.view!;
  const { charset, criteria, returnOptions } = cmd.args;
  if (!searchCharsetSupported(charset)) return this.tagged(cmd.tag, 'NO', '[BADCHARSET (US-ASCII UTF-8)] charset not supported');
  if (returnOptions !== undefined) return this.tagged(cmd.tag, 'BAD', 'SEARCH RETURN (ESEARCH) is not supported');
  const modseq = usesModseq(criteria);
  if (modseq) this.enableCondstore();
  // Flags and new messages first, so the numbers in the answer are ones the client knows.
  await this.flushUpdates(cmd.uid);
  const folder = view.folder;
  const mailboxes = this.mailboxes!;
  const messages: SearchMessage[] = view.messages.map((rec, i) => {
    const uid = rec.uid;
    return { seq: i + 1, uid, modseq: rec.modseq, size: rec.vsize ?? rec.size, flags: rec.flags, internalDate: rec.internalDate, recent: view.recent.has(uid) };
  });
  const raw = async (m: SearchMessage): Promise<Buffer | null> => {
    try {
      return await mailboxes.readMessage(folder, m.uid);
    } catch (err) {
      if (err instanceof StoreError && err.code === 'STORE_NO_FOLDER') return null;
      throw err;
    }
  };
  const abort = new AbortController();
  const onClose = (): void => abort.abort(new Error('connection closed'));
  this.conn.socket.once('close', onClose);
  const search = userSearch(mailboxes);
  const ctx: SearchContext = {
    messages,
    maxUid: view.maxUid,
    signal: abort.signal,
    raw,
    // Messages the index does not hold yet stay candidates: a lagging index costs time, not answers.
    candidates: search && !search.closed ? fullTextCandidates(search.index, folder, view.uidValidity, messages) : undefined,
  };
  let found: SearchMessage[];
  try {
    found = await this.withTimerPaused(() => evaluateSearch(criteria, ctx));
  } catch (err) {
    if (abort.signal.aborted) return;
    throw err;
  } finally {
    this.conn.socket.off('close', onClose);
  }
  const numbers = found.map((m) => (cmd.uid ? m.uid : m.seq));
  let line = `* SEARCH${numbers.length ? ' ' + numbers.join(' ') : ''}`;
  // RFC 7162 3.1.5: with MODSEQ in the criteria, the highest MODSEQ of the matches.
  if (modseq && found.length > 0) line += ` (MODSEQ ${found.reduce((a, m) => Math.max(a, m.modseq), 0)})`;
  await this.untagged([line]);
  await this.tagged(cmd.tag, 'OK', `${cmd.uid ? 'UID ' : ''}SEARCH completed`);
}

