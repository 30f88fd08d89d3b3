/**
 * The first step of a bucket too big for one statement: pick the winning row of every id and rank the
 * winners in output order, from NARROW columns only.
 *
 * Memory: a window function over the whole wide bucket (QUALIFY row_number() OVER (PARTITION BY id))
 * holds wide rows per partition and fails under a small memory_limit. Instead the winners are chosen
 * from id, updated and row position with spillable aggregates and joins, stored in a table (which
 * spills to the temp directory) and ranked in output order there; write-ordered.ts then reads the wide
 * rows once more and puts them in rank order.
 */
import { BadBucketDataError, listSome } from './bucket-errors';
import { columnOr, OUTPUT_ORDER, rowPosition, scanInputs } from './bucket-sql';
import { onOneThreadIfOutOfMemory, toNumber, type DuckSession } from './duckdb-session';
import type { IdDigest } from './id-digests';
import type { InputFootprint } from './input-footprint';
import type { InputSchema, LocalInput, UpdatedPrecision } from './input-schema';

/**
 * The winner of an id is the row with the greatest key: `updated` (NULL lowest) in the high 64 bits,
 * the row position in the low 64, so ties go to the later input in plan order, then the later row
 * (as WINNER_ORDER). One fixed-width number per row lets a single spillable max() pick the winners
 * (arg_max over strings does not spill), and it holds the winner's position. epoch_us + 2^63 + 1 lies in
 * [2, 2^64 - 1) for every finite timestamp, so NULL (0) loses to all. epoch_us of ±infinity is NULL:
 * they get 2^64 - 1 and 1, so they win and lose as WINNER_ORDER's `updated DESC NULLS LAST` has them.
 * A TIMESTAMP_NS `updated` is keyed by epoch_ns (its values fit 64 bits too): by microseconds, two
 * versions less than one apart would tie, and the later input would win whatever their order.
 */
function winnerKey(updated: string, pos: string, precision: UpdatedPrecision): string {
  if (precision === 'none') return `(${pos})::UHUGEINT`;
  const epoch = precision === 'ns' ? 'epoch_ns' : 'epoch_us';
  const high =
    `CASE WHEN ${updated} IS NULL THEN 0 ` +
    `WHEN isinf(${updated}) THEN (CASE WHEN ${updated} > '1970-01-01' THEN 18446744073709551615 ELSE 1 END) ` +
    `ELSE ${epoch}(${updated})::HUGEINT + 9223372036854775809 END`;
  return `((${high})::UHUGEINT * 18446744073709551616::UHUGEINT + (${pos})::UHUGEINT)`;
}

/** The row position in the low 64 bits of a winner key (a mask: UHUGEINT modulo is 250x slower). */
function positionOfKey(key: string): string {
  return `(${key} & 18446744073709551615::UHUGEINT)::BIGINT`;
}

/**
 * Builds table `ordered(pos, rank)`: the position of every id's winning row, ranked 0..n-1 in output
 * order (platform, datetime, id). Only narrow columns are read.
 *
 * Returns the digest of the inputs' ids, taken from the same read (every input row's id, straight
 * from the files; the row count is checked against the footers), which saves the heavy path a
 * separate pass over the inputs. Throws the null-id error before anything is ranked.
 */
export async function computeWinners(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  footprint: InputFootprint,
  updated: UpdatedPrecision,
): Promise<IdDigest> {
  await session.exec('DROP TABLE IF EXISTS narrow; DROP TABLE IF EXISTS winners; DROP TABLE IF EXISTS ordered');
  const pos = rowPosition('r');
  // Each statement that builds a table or a digest from all rows may run out of memory at a small limit.
  const withOneThreadFallback = <T>(run: () => Promise<T>) => onOneThreadIfOutOfMemory(session, run);
  await withOneThreadFallback(() =>
    session.exec(
      `CREATE TABLE narrow AS
       SELECT r.id AS id, ${columnOr(schemas, 'platform', 'VARCHAR')} AS platform,
              ${columnOr(schemas, 'datetime', 'TIMESTAMPTZ')} AS datetime, ${pos} AS pos,
              ${winnerKey(columnOr(schemas, 'updated', 'TIMESTAMPTZ'), pos, updated)} AS k
       FROM ${scanInputs(inputs)} r`,
    ),
  );
  const [n] = await session.rows('SELECT count(*) AS rows, count(*) FILTER (WHERE id IS NULL) AS null_ids FROM narrow');
  if (toNumber(n?.null_ids) > 0) {
    await session.exec('DROP TABLE narrow');
    throw await nullIdError(session, inputs);
  }
  if (toNumber(n?.rows) !== footprint.rows) {
    await session.exec('DROP TABLE narrow');
    throw new Error(
      `the ${inputs.length} input(s) yielded ${toNumber(n?.rows)} rows but their footers hold ${footprint.rows}; not compacting from a partial read`,
    );
  }
  // Measured: a join on the 16-byte key is 3x slower than on the 8-byte position.
  await withOneThreadFallback(() => session.exec(`CREATE TABLE winners AS SELECT ${positionOfKey('max(k)')} AS pos FROM narrow GROUP BY id`));
  // Not in the GROUP BY: carrying the id out of it ran out of memory at a 128 MB limit.
  const [w] = await withOneThreadFallback(() =>
    session.rows('SELECT count(*) AS distinct_ids, coalesce(sum(hash(n.id)::HUGEINT), 0) AS h FROM narrow n SEMI JOIN winners w ON n.pos = w.pos'),
  );
  await withOneThreadFallback(() =>
    session.exec(
      `CREATE TABLE ordered AS
         SELECT n.pos AS pos, row_number() OVER (ORDER BY ${OUTPUT_ORDER('n.platform', 'n.datetime', 'n.id')}) - 1 AS rank
         FROM narrow n SEMI JOIN winners w ON n.pos = w.pos`,
    ),
  );
  await session.exec('DROP TABLE narrow; DROP TABLE winners');
  return { rows: toNumber(n?.rows), distinctIds: toNumber(w?.distinct_ids), idHashSum: String(w?.h ?? 0), nullIds: 0 };
}

/** Names the inputs holding rows without an id (which cannot be deduplicated). */
export async function nullIdError(session: DuckSession, inputs: readonly LocalInput[]): Promise<BadBucketDataError> {
  const rows = await session.rows(
    `SELECT r.file_index AS fi, count(*) AS n FROM ${scanInputs(inputs)} r WHERE r.id IS NULL GROUP BY ALL ORDER BY fi`,
  );
  const keys = rows.map((r) => inputs[toNumber(r.fi)]?.key ?? `input ${toNumber(r.fi)}`);
  const detail = listSome(rows.map((r, i) => `${keys[i]} (${toNumber(r.n)} rows)`));
  return new BadBucketDataError(`rows with a null 'id' cannot be deduplicated: ${detail}`, keys);
}
