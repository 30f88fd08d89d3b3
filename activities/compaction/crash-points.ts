/**
 * Test-only fault injection: a real SIGKILL at an exact point of the bucket engine or the catalog
 * rebuild, so crash-recovery tests exercise the states a dying worker leaves behind. Inert unless
 * EARTHCATALOG_CRASH_AT is set.
 *
 * EARTHCATALOG_CRASH_AT = `<point>` or `<point>@<scope prefix>`; EARTHCATALOG_CRASH_ONCE_FILE names a
 * marker file: the process dies only if the marker does not exist yet (and creates it first), so the
 * retried attempt runs through.
 */
import { closeSync, openSync } from 'node:fs';

/** Two in a bucket's compaction, two in the catalog rebuild (after its files are written, before and after the commit). */
export type CrashPointName = 'after-publish' | 'after-partial-delete' | 'before-catalog-commit' | 'after-catalog-commit';

/** `scope`: the bucket's key, or the table's name for the rebuild. */
export function crashPoint(name: CrashPointName, scope: string): void {
  const spec = process.env.EARTHCATALOG_CRASH_AT;
  if (!spec) return;
  const at = spec.indexOf('@');
  const point = at < 0 ? spec : spec.slice(0, at);
  const within = at < 0 ? undefined : spec.slice(at + 1);
  if (point !== name) return;
  if (within !== undefined && !scope.startsWith(within)) return;
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
