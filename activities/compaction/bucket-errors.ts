/**
 * Permanent failures of one bucket. Retrying cannot help (the data itself is wrong, or the plan no
 * longer matches the warehouse), so the activity wrapper reports them as non-retryable; nothing has
 * been deleted when either is thrown.
 */
import { isOutOfMemory } from './duckdb-session';

/**
 * Whether DuckDB's error says a file cannot be decoded (truncated, not Parquet, a corrupt page). An
 * `IO Error` is the operating system's (missing, denied, EIO, too many open files) and running out of
 * memory is the budget's: neither says anything about the file, so neither may condemn it.
 */
export function isDamagedFileError(err: unknown, file?: string): boolean {
  if (!(err instanceof Error) || isOutOfMemory(err)) return false;
  return /\b(Invalid Input|Conversion|Serialization|Invalid) Error\b/.test(err.message) && (file === undefined || err.message.includes(file));
}

/**
 * The first `max` items joined, then how many more: a bucket of 8,000 inputs must not put all of them
 * into one failure message, which travels in activity failures, the run's summary and continue-as-new.
 */
export function listSome(items: readonly string[], max = 10): string {
  const more = items.length > max ? ` and ${items.length - max} more` : '';
  return items.slice(0, max).join(', ') + more;
}

/** An input (or our own output) cannot be merged: corrupt, empty, no `id`, conflicting types, null ids. */
export class BadBucketDataError extends Error {
  constructor(
    message: string,
    /** The objects at fault (warehouse keys). */
    readonly keys: readonly string[] = [],
  ) {
    super(message);
    this.name = 'BadBucketDataError';
  }
}

/** The bucket request itself is malformed (no inputs, an input outside the bucket, listed twice). */
export class InvalidBucketRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidBucketRequestError';
  }
}

/** From which number of columns a bucket's memory is told by its columns (BucketMemoryError). */
const WIDE_COLUMNS = 500;
/**
 * Budget per column a bucket of a few rows needed, rounded up (session 52, steps of 256 MB, two and four threads
 * alike: 1,000 columns failed at 512 MB and compacted at 768; 1,500 at 1,024; 2,000 at 1,280; 3,000 at 2,048, not at 1,792).
 */
const MB_PER_COLUMN = 0.75;

/**
 * DuckDB ran out of its memory limit on this bucket. The same inputs under the same limit fail the
 * same way, so after one retry (a transient peak) the bucket is reported for a larger budget.
 */
export class BucketMemoryError extends Error {
  constructor(
    bucket: string,
    memoryLimitMb: number,
    inputs: number,
    bytesIn: number,
    cause: string,
    largest?: { key: string; rowGroup: number; bytes: number; rows: number },
    /** Columns of the bucket's rows (the union of its inputs). */
    columns?: number,
  ) {
    const mb = (bytes: number) => (bytes / (1024 * 1024)).toFixed(0);
    // Row groups of an eighth of the limit leave room for the decode of several at once; from the file's
    // own bytes per row, as a fixed number is no advice for rows of megabytes.
    const rowsPerGroup = largest && Math.max(1, Math.floor((largest.rows * memoryLimitMb * 1024 * 1024) / 8 / Math.max(1, largest.bytes)));
    // A row group of a quarter of the limit or more is what a bucket of small files fails on: name it,
    // since its bytes on disk (compressed) say nothing of it.
    const rowGroup =
      largest && largest.bytes * 4 >= memoryLimitMb * 1024 * 1024
        ? ` Its largest input row group (${largest.key}, row group ${largest.rowGroup}) holds ${mb(largest.bytes)} MB uncompressed, ` +
          `which DuckDB decodes whole (${largest.rows} row(s)): rewrite that file with smaller row groups ` +
          `(pyarrow's row_group_size=${rowsPerGroup} or fewer), or give a budget of several times that.`
        : '';
    // DuckDB's buffers are per column and thread, whatever the rows: a bucket of a few rows of thousands of
    // columns needs a budget by its columns (README: "Performance and memory"), which smaller ranges do not change.
    const wanted = columns === undefined ? 0 : Math.ceil((columns * MB_PER_COLUMN) / 256) * 256;
    const wide =
      columns !== undefined && columns >= WIDE_COLUMNS && wanted > memoryLimitMb * 2
        ? ` Its rows have ${columns} columns, and DuckDB's memory grows with the columns whatever the rows: give a budget of about ${wanted} MB (${MB_PER_COLUMN} MB per column).`
        : '';
    super(
      `bucket ${bucket}: DuckDB ran out of its ${memoryLimitMb} MB memory limit (half the bucket activity's memory budget) ` +
        `compacting ${inputs} input(s) of ${mb(bytesIn)} MB; nothing was deleted. Give the workers a larger ` +
        `--memory-budget-mb (EARTHCATALOG_MEMORY_BUDGET_MB) and compact again: the next run plans the bucket anew.${wide}${rowGroup} DuckDB said: ${cause}`,
    );
    this.name = 'BucketMemoryError';
  }
}

/** Planned inputs are gone and no output of this plan exists: someone else changed the bucket. */
export class MissingPlannedInputError extends Error {
  constructor(
    readonly bucket: string,
    readonly missing: readonly string[],
  ) {
    super(
      `bucket ${bucket}: ${missing.length} planned input(s) no longer exist and no compacted output of this plan is present ` +
        `(${listSome(missing)}); nothing was deleted — plan again`,
    );
    this.name = 'MissingPlannedInputError';
  }
}

/**
 * A compacted output of another plan, which this plan does not list, is in the bucket: a run stopped
 * (terminated, timed out, its worker cut off from Temporal) while it compacted the bucket, and its
 * attempt went on beside the plan that followed. Both outputs would join the table, so the attempt
 * deletes nothing; the next run's plan takes every file of the bucket and deduplicates them together.
 */
export class OtherPlanOutputError extends Error {
  constructor(
    readonly bucket: string,
    readonly others: readonly string[],
    /** This plan's output, when it is published beside them. */
    published?: string,
  ) {
    super(
      `bucket ${bucket}: ${others.length} compacted output(s) of another plan appeared after this plan listed the bucket ` +
        `(${listSome(others)}): a run stopped while it compacted the bucket (terminated, timed out, or its worker cut off) and its attempt went on. ` +
        (published
          ? `This plan's output ${published} is published beside it and this attempt deleted no input: readers see those rows twice until the next run compacts them together`
          : 'Nothing was published or deleted here; the next run compacts them together'),
    );
    this.name = 'OtherPlanOutputError';
  }
}

/**
 * A planned input vanished while this attempt was reading it: another attempt of the same plan (a
 * zombie after a heartbeat timeout) is finishing the bucket. Retryable on purpose: the next attempt
 * inspects the bucket again and finds it being deleted or done.
 */
export class InputsChangedError extends Error {
  constructor(
    readonly bucket: string,
    readonly vanished: readonly string[],
    readonly rewritten: readonly string[] = [],
  ) {
    const parts = [
      vanished.length ? `${vanished.length} planned input(s) disappeared during the compaction (${listSome(vanished)})` : '',
      rewritten.length ? `${rewritten.length} planned input(s) were rewritten while being read (${listSome(rewritten)})` : '',
    ];
    super(`bucket ${bucket}: ${parts.filter(Boolean).join('; ')}; retry to resume`);
    this.name = 'InputsChangedError';
  }
}
