// Errors with stable codes, one subclass per module, as undici does: callers branch on
// `code`, never on message text. Protocol errors are not exceptions (they are replies);
// these are for bugs, I/O faults and configuration problems.

export class HearthError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An error's message for a log line or a reply text (anything thrown, not only Errors). */
export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Is this an I/O error that means "the disk is full or broken", not a bug? */
export function isStorageFault(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EIO' || code === 'EDQUOT' || code === 'EROFS' || code === 'EMFILE' || code === 'ENFILE';
}
