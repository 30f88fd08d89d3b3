/**
 * Following a run through an outage of the Temporal server (a restart, an upgrade, a network cut).
 * The run itself waits on the server and goes on once it is back; a follower (`compact` waiting for
 * its summary, `status --watch`, `cancel`) must wait too instead of failing: an exit 1 would tell cron
 * a compaction failed that then completes.
 */
import { isGrpcServiceError, type ConnectionLike } from '@temporalio/client';
import { firstLine } from '../activities/error-text';

/** gRPC status codes (the SDK's grpc-js is not a dependency of ours). */
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_UNAVAILABLE = 14;

/** How long a follower waits for a server it cannot reach before it gives up (the run is not affected). */
export const OUTAGE_LIMIT_MS = 15 * 60_000;

/** Between two tries while the server cannot be reached: each try itself takes the SDK's ~20 s of retries. */
const RETRY_PAUSE_MS = 2_000;

/** How long the reachability check waits for the server: it answers within milliseconds when it is up. */
const PING_DEADLINE_MS = 3_000;

/** The server could not be reached for OUTAGE_LIMIT_MS: the follower stops, not the run. */
export class ServerUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServerUnreachableError';
  }
}

/**
 * A call that failed because the server did not answer (nothing listens, the connection broke, no answer
 * in time), not because the server refused it. The SDK retries these itself for ~20 s before it throws.
 */
function isServerUnreachable(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (isGrpcServiceError(e) && (e.code === GRPC_UNAVAILABLE || e.code === GRPC_DEADLINE_EXCEEDED)) return true;
  }
  return false;
}

/**
 * Whether the server answers at all. A progress query fails the same way (a deadline) whether no worker
 * answers it or no server does, and the advice differs.
 */
export async function serverAnswers(connection: ConnectionLike): Promise<boolean> {
  try {
    await connection.withDeadline(Date.now() + PING_DEADLINE_MS, () => connection.workflowService.getSystemInfo({}));
    return true;
  } catch {
    return false;
  }
}

/**
 * `call`, tried again while the server cannot be reached, for up to `limitMs` from the first failure;
 * `onLost` is told once, with the first failure's message. Any other error is thrown at once.
 * `giveUp` words the error after the limit: what goes on without the follower and how to follow it.
 */
export async function throughOutages<T>(
  call: () => Promise<T>,
  opts: { giveUp: string; onLost?: (error: string) => void; limitMs?: number },
): Promise<T> {
  const limitMs = opts.limitMs ?? OUTAGE_LIMIT_MS;
  let lostAt: number | undefined;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (!isServerUnreachable(err)) throw err;
      const message = firstLine(err);
      if (lostAt === undefined) {
        lostAt = Date.now();
        opts.onLost?.(message);
      }
      const lostFor = Date.now() - lostAt;
      if (lostFor >= limitMs) {
        throw new ServerUnreachableError(`the Temporal server has not answered for ${Math.round(lostFor / 1000)} s (${message}); ${opts.giveUp}`);
      }
      await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
    }
  }
}
