// Test mode (`hearth serve --catch`, like Mailpit): the queue's deliver(job) is replaced by one
// that files every outbound message into the sender's local "Caught" folder instead of letting
// it leave the machine, so an application under development can be pointed at hearth safely.
// The queue sees a normal successful delivery (250), so nothing is retried or bounced.
import type { Logger } from '../core/log.ts';
import type { DeliveryJob, DeliveryOutcome } from '../queue/queue.ts';
import type { MailboxRef } from '../smtp/listener.ts';

export const CAUGHT_FOLDER = 'Caught';

export type CatchOptions = {
  log: Logger;
  /** Whose "Caught" folder gets the message: the sender's own mailboxes, or a fallback (postmaster). */
  owners(from: string): MailboxRef[];
  /** File the message into `folder` of `box` (creating the folder when missing). */
  file(box: MailboxRef, folder: string, content: Buffer): Promise<void>;
  folder?: string;
};

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks);
}

export function makeCatchDeliver(opts: CatchOptions): (job: DeliveryJob) => Promise<DeliveryOutcome> {
  const folder = opts.folder ?? CAUGHT_FOLDER;
  // The queue makes one job per recipient domain; the message is filed once, with every recipient named.
  const filed = new Set<string>();
  return async (job) => {
    const rcpts = job.recipients.map((r) => r.address);
    const reply = `250 2.0.0 caught by hearth test mode (not sent), in ${folder}`;
    if (!filed.has(job.entry.id)) {
      const owners = opts.owners(job.entry.from);
      if (owners.length === 0) {
        opts.log.warn({ queueId: job.entry.id, from: job.entry.from }, 'test mode: no local mailbox for the sender or postmaster; message dropped');
      } else {
        const all = job.entry.recipients.map((r) => r.address).join(', ');
        // The envelope is what a developer needs to see and what headers do not show (Bcc).
        const header = Buffer.from(`X-Hearth-Caught: from=<${job.entry.from}> to=${all}\r\n`);
        const content = Buffer.concat([header, await readAll(job.open())]);
        for (const box of owners) await opts.file(box, folder, content);
      }
      filed.add(job.entry.id);
      if (filed.size > 10_000) filed.delete(filed.values().next().value as string);
    }
    opts.log.info({ queueId: job.entry.id, domain: job.domain, rcpts }, 'test mode: caught instead of sent');
    return { recipients: rcpts.map((address) => ({ address, status: 'delivered' as const, reply })) };
  };
}
