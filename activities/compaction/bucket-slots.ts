/**
 * The worker's memory slots for bucket activities. The worker's activity slots are more than its
 * bucket concurrency (lock, plan and catalog activities need room beside the buckets), and the server
 * hands any activity to any free slot, so without this a worker could run more buckets than its
 * memory allows: e.g. when a run's maxParallelBuckets exceeds what the remaining workers can take
 * after one of them died.
 */
export class BucketSlots {
  private inUse = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly size: number) {
    if (!(Number.isInteger(size) && size >= 1)) throw new Error(`bucket slots must be a positive integer, got ${size}`);
  }

  get busy(): number {
    return this.inUse;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with the release function once a slot is free (in arrival order); rejects when `signal` aborts first. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.inUse < this.size) {
      this.inUse++;
      return this.releaser();
    }
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(wake);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason ?? new Error('aborted while waiting for a bucket slot'));
      };
      const wake = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      this.waiting.push(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    // The releasing holder handed its slot over: inUse stays as it was.
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.inUse--;
    };
  }
}
