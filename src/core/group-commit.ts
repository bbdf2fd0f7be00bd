// Group commit for fsync: callers that ask while a sync of the same key (a directory) is
// running share the next one, which starts after their change and so covers it. Under load
// one fsync serves a whole batch of deliveries instead of one each.
const noop = (): void => undefined;

type KeyState = { running: Promise<void> | undefined; next: Promise<void> | undefined };

export class GroupCommit {
  readonly #run: (key: string) => Promise<void>;
  readonly #states = new Map<string, KeyState>();

  constructor(run: (key: string) => Promise<void>) {
    this.#run = run;
  }

  sync(key: string): Promise<void> {
    let state = this.#states.get(key);
    if (state === undefined) {
      state = { running: undefined, next: undefined };
      this.#states.set(key, state);
    }
    const s = state;
    const start = (): Promise<void> => {
      const p: Promise<void> = this.#run(key).finally(() => {
        if (s.running === p) s.running = undefined;
        if (s.running === undefined && s.next === undefined && this.#states.get(key) === s) this.#states.delete(key);
      });
      s.running = p;
      return p;
    };
    if (s.running === undefined) return start();
    s.next ??= s.running.then(noop, noop).then(() => {
      s.next = undefined;
      return start();
    });
    return s.next;
  }
}
