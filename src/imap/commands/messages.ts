// Commands that change messages in the selected folder: STORE (RFC 3501 6.4.6, UNCHANGEDSINCE
// RFC 7162 3.1.3), COPY (6.4.7, COPYUID RFC 4315), MOVE (RFC 6851), EXPUNGE (6.4.3) and
// UID EXPUNGE (RFC 4315 2.1). Each accepts the UID form through `cmd.uid`.
import { StoreError } from '../../store/names.ts';
import type { CommandOf } from '../parse.ts';
import { formatSequence } from '../sequence.ts';
import type { ImapSession } from '../session.ts';
import type { ViewMessage } from '../selected.ts';

/** The messages a set names, or null after answering BAD (a sequence number past the end). */
export async function resolveSet(session: ImapSession, cmd: CommandOf<'FETCH' | 'STORE' | 'COPY' | 'MOVE'>): Promise<ViewMessage[] | null> {
  const msgs = session.view!.resolve(cmd.args.set, cmd.uid);
  if (msgs === null) {
    await session.bad(cmd.tag, 'invalid message sequence number (beyond the number of messages)');
    return null;
  }
  return msgs;
}

async function readOnly(session: ImapSession, tag: string): Promise<boolean> {
  if (!session.view!.readOnly) return false;
  await session.tagged(tag, 'NO', '[READ-ONLY] the mailbox is selected read-only (EXAMINE)');
  return true;
}

export async function do_SELECTED_STORE(this: ImapSession, cmd: CommandOf<'STORE'>): Promise<void> {
  const view = this.view!;
  if (await readOnly(this, cmd.tag)) return;
  const msgs = await resolveSet(this, cmd);
  if (!msgs) return;
  const { action, silent, flags, unchangedSince } = cmd.args;
  if (unchangedSince !== undefined) this.enableCondstore();
  let result;
  try {
    const mode = action === 'set' ? 'replace' : action;
    result = await this.withTimerPaused(() => this.mailboxes!.setFlags(view.folder, msgs.map((m) => m.rec.uid), mode, [...flags], { unchangedSince }));
  } catch (err) {
    return this.storeError(cmd.tag, err, 'STORE');
  }
  if (this.view !== view) return this.tagged(cmd.tag, 'NO', 'mailbox was closed meanwhile');
  view.forgetFlags(result.changed);
  const changed = new Set(result.changed.map((r) => r.uid));
  const failed = new Set(result.failedModified);
  const lines: string[] = [];
  for (const m of msgs) {
    if (failed.has(m.rec.uid)) continue;
    const rec = view.record(m.rec.uid);
    if (!rec) continue;
    const uid = cmd.uid ? `UID ${rec.uid} ` : '';
    const modseq = this.condstore ? ` MODSEQ (${rec.modseq})` : '';
    // RFC 7162 3.1.3: with .SILENT, messages whose MODSEQ changed still get a MODSEQ response.
    if (!silent) lines.push(`* ${m.seq} FETCH (${uid}FLAGS (${view.flagsOf(rec).join(' ')})${modseq})`);
    else if (this.condstore && changed.has(rec.uid)) lines.push(`* ${m.seq} FETCH (${uid}MODSEQ (${rec.modseq}))`);
  }
  await this.untagged(lines);
  // RFC 3501 7.4.1: no EXPUNGE during STORE by sequence number.
  await this.flushUpdates(cmd.uid);
  if (failed.size > 0) {
    const set = cmd.uid ? result.failedModified : msgs.filter((m) => failed.has(m.rec.uid)).map((m) => m.seq);
    return this.tagged(cmd.tag, 'OK', `[MODIFIED ${formatSequence(set)}] conditional STORE failed for some messages`);
  }
  await this.tagged(cmd.tag, 'OK', 'STORE completed');
}

async function copyOrMove(session: ImapSession, cmd: CommandOf<'COPY' | 'MOVE'>): Promise<void> {
  const view = session.view!;
  if (cmd.verb === 'MOVE' && (await readOnly(session, cmd.tag))) return;
  const msgs = await resolveSet(session, cmd);
  if (!msgs) return;
  if (msgs.length === 0) {
    // RFC 3501 6.4.8: a UID set naming no existing message is not an error.
    await session.flushUpdates(cmd.uid);
    return session.tagged(cmd.tag, 'OK', `${cmd.verb} completed (no messages)`);
  }
  const mailboxes = session.mailboxes!;
  let map;
  try {
    const uids = msgs.map((m) => m.rec.uid);
    map = await session.withTimerPaused(() => (cmd.verb === 'MOVE' ? mailboxes.move(view.folder, uids, cmd.args.mailbox) : mailboxes.copy(view.folder, uids, cmd.args.mailbox)));
  } catch (err) {
    if (err instanceof StoreError && err.code === 'STORE_NO_FOLDER') return session.tagged(cmd.tag, 'NO', '[TRYCREATE] no such mailbox');
    return session.storeError(cmd.tag, err, cmd.verb);
  }
  const uidValidity = mailboxes.state(cmd.args.mailbox)?.uidValidity ?? 0;
  const copyuid = map.length > 0 ? `[COPYUID ${uidValidity} ${map.map((m) => m.from).join(',')} ${map.map((m) => m.to).join(',')}] ` : '';
  if (cmd.verb === 'MOVE') {
    // RFC 6851 3.3: COPYUID goes in an untagged OK before the EXPUNGEs.
    if (copyuid) await session.untagged([`* OK ${copyuid.trim()} moved`]);
    await session.flushUpdates(true);
    return session.tagged(cmd.tag, 'OK', 'MOVE completed');
  }
  await session.flushUpdates(cmd.uid);
  await session.tagged(cmd.tag, 'OK', `${copyuid}COPY completed`);
}

export function do_SELECTED_COPY(this: ImapSession, cmd: CommandOf<'COPY'>): Promise<void> {
  return copyOrMove(this, cmd);
}

export function do_SELECTED_MOVE(this: ImapSession, cmd: CommandOf<'MOVE'>): Promise<void> {
  return copyOrMove(this, cmd);
}

export async function do_SELECTED_EXPUNGE(this: ImapSession, cmd: CommandOf<'EXPUNGE'>): Promise<void> {
  const view = this.view!;
  if (await readOnly(this, cmd.tag)) return;
  let uids: number[] | undefined;
  if (cmd.args.set) {
    const msgs = view.resolve(cmd.args.set, true)!;
    uids = msgs.map((m) => m.rec.uid);
    if (uids.length === 0) {
      await this.flushUpdates(true);
      return this.tagged(cmd.tag, 'OK', 'UID EXPUNGE completed (no messages)');
    }
  }
  await this.withTimerPaused(() => this.mailboxes!.expunge(view.folder, uids));
  // The store's 'expunged' event has been noted by the view: report it now, in EXPUNGE order.
  await this.flushUpdates(true);
  await this.tagged(cmd.tag, 'OK', `${cmd.uid ? 'UID ' : ''}EXPUNGE completed`);
}
