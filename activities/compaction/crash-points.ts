/**
 * Test-only fault injection: a real SIGKILL at an exact point of the bucket engine, so crash-recovery
 * tests exercise the states a dying worker leaves behind. Inert unless EARTHCATALOG_CRASH_AT is set.
 *
 * EARTHCATALOG_CRASH_AT = `<point>` or `<point>@<bucketPrefix>`; EARTHCATALOG_CRASH_ONCE_FILE names a
 * marker file: the process dies only if the marker does not exist yet (and creates it first), so the
 * retried attempt runs through.
 */
import { closeSync, openSync } from 'node:fs';

export type CrashPointName = 'after-publish' | 'after-partial-delete';

export function crashPoint(name: CrashPointName, bucketKey: string): void {
  const spec = process.env.EARTHCATALOG_CRASH_AT;
  if (!spec) return;
  const at = spec.indexOf('@');
  const point = at < 0 ? spec : spec.slice(0, at);
  const bucket = at < 0 ? undefined : spec.slice(at + 1);
  if (point !== name) return;
  if (bucket !== undefined && bucket !== bucketKey && !bucketKey.startsWith(bucket)) return;
  const once = process.env.EARTHCATALOG_CRASH_ONCE_FILE;
  if (once) {
    try {
      // 'wx' fails if the marker exists: exactly one process crashes, even with several workers.
      closeSync(openSync(once, 'wx'));
    } catch {
      return;
    }
  }
  process.kill(process.pid, 'SIGKILL');
}
