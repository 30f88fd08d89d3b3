/** The run's summary as the CLI prints it: the seed's figures, then a line for each thing left for later; and its exit code. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bucketsDone, interruptedWarning, pausedNote, silentBucketCount, silentBucketsNote, silentPlan, silentPlanNote, silentRebuild, silentRebuildNote, heartbeatTimeoutSeconds, waitingRebuild, waitingRebuildNote, warningLine } from '../client/commands/status';
import { ActivityFailure, ApplicationFailure, RetryState } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { CompactionEndedError, failureTypeOf } from '../client/start-compaction';
import { CompactionEndedError as PackageRootEndedError } from '../index';
import { parseCompactionInput } from '../workflows/contract';
import { EXIT_NEEDS_ATTENTION, exitCodeOf, formatSummary } from '../client/summary-format';
import type { CompactionSummary } from '../workflows/contract';
import { initialProgress, type CompactionProgress } from '../workflows/progress';
import { createProgressRenderer, LOG_LINE_EVERY_MS, progressLine } from '../client/progress-bar';

const base: CompactionSummary = {
  warehouse: '/data/warehouse',
  catalog: '/data/catalog.db',
  planId: 'p1',
  dryRun: false,
  bucketsScanned: 3,
  bucketsCompacted: 2,
  bucketsAlreadyCompacted: 0,
  filesBefore: 9,
  filesAfter: 4,
  rowsBefore: 100,
  rowsAfter: 80,
  duplicatesRemoved: 20,
  bytesBefore: 1000,
  bytesAfter: 800,
  failedBuckets: [],
  failedBucketsTotal: 0,
  snapshotId: '42',
  catalogDataFiles: 4,
  catalogRows: 80,
  catalogMetadataFilesExpired: 0,
  unreadableFiles: [],
  unreadableFilesTotal: 0,
  sampleBuckets: [],
  workflowRuns: 1,
};

test('a clean run prints the figures and no line about files left for later', () => {
  const text = formatSummary(base);
  assert.match(text, /^buckets_scanned: +3$/m);
  assert.match(text, /^files_after: +4$/m);
  assert.doesNotMatch(text, /left for the next run|not carried over/);
});

test('deferred and rewritten inputs, dropped delete files and buckets a resume found finished each get a line', () => {
  const text = formatSummary({ ...base, filesDeferred: 5, filesRewritten: 1, catalogDeleteFilesDropped: 2, bucketsAlreadyCompacted: 4 });
  assert.match(text, /^4 of the compacted bucket\(s\) had been finished by an earlier attempt or run \(resume\), not redone$/m);
  assert.match(text, /^5 file\(s\) of buckets too large for one task were left for the next run$/m);
  assert.match(text, /^1 input file\(s\) were rewritten after they were read and were left for the next run$/m);
  assert.match(text, /^2 delete file\(s\) of another engine were not carried over: the rows they deleted are visible again$/m);
});

test('exit code 3 when buckets failed or files could not be registered in the table, else 0', () => {
  assert.equal(exitCodeOf(base), 0);
  assert.equal(exitCodeOf({ ...base, filesDeferred: 5, filesRewritten: 1 }), 0, 'work left for the next run is routine');
  assert.equal(exitCodeOf({ ...base, failedBuckets: [{ bucket: 'grid_partition=a/year=2020', type: 'BadBucketData', reason: 'r' }], failedBucketsTotal: 1 }), EXIT_NEEDS_ATTENTION);
  assert.equal(exitCodeOf({ ...base, unreadableFiles: [], unreadableFilesTotal: 1 }), EXIT_NEEDS_ATTENTION, 'rows readers cannot see');
  assert.equal(EXIT_NEEDS_ATTENTION, 3);
});

test("a dry run's plan id is marked as not written (resume --plan cannot find it); a real run's is printed as it is", () => {
  assert.match(formatSummary(base), /^plan_id: +p1$/m);
  assert.match(formatSummary({ ...base, dryRun: true }), /^plan_id: +p1 \(dry run: not written\)$/m);
  // Even with nothing to compact a run rebuilds the table (new single-file buckets get registered): the dry run says so.
  assert.match(formatSummary({ ...base, dryRun: true, bucketsCompacted: 0 }), /^dry run: nothing was changed; 0 bucket\(s\) would be compacted and the table rebuilt from the files as they are then$/m);
});

test('an ended run\'s buckets done say how many of them failed (a failed bucket counts as done)', () => {
  assert.equal(bucketsDone({ bucketsDone: 3, bucketsTotal: 5 }), '3 of 5 buckets done');
  assert.equal(bucketsDone({ bucketsDone: 3, bucketsTotal: 3, bucketsFailed: 3 }), '3 of 3 buckets done (3 failed)');
  assert.equal(bucketsDone({ bucketsDone: 2, bucketsTotal: 3, bucketsFailed: 0 }), '2 of 3 buckets done');
});

test("a dry run with --use-lock says what a run would find at the pipeline's lock object", () => {
  const pipelineLock = 'pipeline lock /w/.lock is held by incremental on py-host until 2026-12-08T03:46:00.000Z: a run would wait for it (about 5 minutes), then fail';
  assert.match(formatSummary({ ...base, dryRun: true, pipelineLock }), /^--use-lock: pipeline lock \/w\/\.lock is held by incremental on py-host until 2026-12-08T03:46:00\.000Z: a run would wait for it \(about 5 minutes\), then fail$/m);
  assert.doesNotMatch(formatSummary({ ...base, dryRun: true }), /--use-lock/);
  const tookOver = 'took over pipeline lock /w/.lock from incremental on py-host: expired at 2026-12-07T03:46:00.000Z';
  assert.match(formatSummary({ ...base, pipelineLock: tookOver }), /^--use-lock: took over pipeline lock \/w\/\.lock from incremental on py-host: expired at /m, 'a run names whose object it took over');
});

test("a dry run lists the largest buckets and says how many more it would compact", () => {
  const sampleBuckets = ['grid_partition=a/year=2020', 'grid_partition=b/year=2020'];
  const text = formatSummary({ ...base, dryRun: true, bucketsCompacted: 30, sampleBuckets });
  assert.match(text, /would be compacted .*, the largest:\n  grid_partition=a\/year=2020\n  grid_partition=b\/year=2020\n  … and 28 more\n/);
  assert.doesNotMatch(formatSummary({ ...base, dryRun: true, bucketsCompacted: 2, sampleBuckets }), /… and \d+ more/, 'every bucket listed');
});

test('a run that created the table says so, and how to recognise a mistyped catalog or table', () => {
  assert.doesNotMatch(formatSummary(base), /was created/);
  assert.match(
    formatSummary({ ...base, catalogTableCreated: true }),
    /^the table did not exist in \/data\/catalog\.db and was created, as on a first run: if you meant an existing table, check --catalog, --iceberg-namespace, --table and --catalog-name \(the table you meant still lists/m,
  );
  assert.equal(exitCodeOf({ ...base, catalogTableCreated: true }), 0, 'the first compaction of a warehouse creates its table');
  assert.match(
    formatSummary({ ...base, dryRun: true, catalogTableCreated: true }),
    /^the table does not exist in \/data\/catalog\.db: the run would create it\. If you meant an existing table, check --catalog, --iceberg-namespace, --table and --catalog-name$/m,
  );
  // S3 Tables has no catalog name: the flag is not suggested.
  const s3tables = 'arn:aws:s3tables:us-west-2:123456789012:bucket/earth';
  assert.match(
    formatSummary({ ...base, catalog: s3tables, catalogTableCreated: true }),
    /^the table did not exist in arn:aws:s3tables:us-west-2:123456789012:bucket\/earth and was created, as on a first run: if you meant an existing table, check --catalog, --iceberg-namespace and --table \(the table you meant/m,
  );
  assert.match(formatSummary({ ...base, catalog: s3tables, dryRun: true, catalogTableCreated: true }), /If you meant an existing table, check --catalog, --iceberg-namespace and --table$/m);
  // A --warehouse one folder too high finds no bucket, and a new table takes that for an empty warehouse.
  assert.doesNotMatch(formatSummary({ ...base, catalogTableCreated: true }), /check --warehouse/);
  const empty = { ...base, bucketsScanned: 0, bucketsCompacted: 0, catalogTableCreated: true, catalogDataFiles: 0 };
  assert.match(formatSummary(empty), /^no data file of the layout \(grid_partition=<cell>\/year=<yyyy>\/<name>\.parquet\) is directly under \/data\/warehouse, so the table is empty: check --warehouse$/m);
  assert.match(formatSummary({ ...empty, dryRun: true, catalogDataFiles: null }), /so the table would be empty: check --warehouse$/m);
  assert.doesNotMatch(formatSummary({ ...empty, catalogTableCreated: false }), /check --warehouse/, 'an existing table refuses a warehouse that is not its own before it plans');
  // With a selection, no bucket found says the selection matched nothing, not that the warehouse is wrong.
  const selected = formatSummary({ ...empty, dryRun: true, catalogDataFiles: null }, { cells: ['zürich'], years: [2024] });
  assert.doesNotMatch(selected, /check --warehouse/);
  assert.match(selected, /^no bucket of \/data\/warehouse is in the selection \(--cells zürich --years 2024\): a cell matches only the folder grid_partition=<cell> spelled the same, byte for byte/m);
  assert.doesNotMatch(formatSummary(base, { cells: ['a'] }), /selection/, 'a selection that found buckets');
  // Years alone: no word of spelling. A table of no file at all: the warehouse is the question, whatever the selection.
  assert.match(formatSummary({ ...empty, dryRun: true, catalogDataFiles: null }, { years: [2024] }), /^no bucket of \/data\/warehouse is in the selection \(--years 2024\)$/m);
  const none = formatSummary(empty, { years: [2024] });
  assert.match(none, /check --warehouse$/m);
  assert.doesNotMatch(none, /selection/);
});

test('a schema the files needed is reported; registered files readers cannot read as the table need attention', () => {
  assert.doesNotMatch(formatSummary(base), /schema/);
  const evolved = { ...base, catalogSchemaEvolved: { schemaId: 2, added: ['eo:cloud_cover'], widened: ['n_obs: int -> long'] } };
  assert.match(formatSummary(evolved), /^the files needed a new table schema \(2\); columns added: eo:cloud_cover; types widened: n_obs: int -> long$/m);
  assert.equal(exitCodeOf(evolved), 0, 'a new column is routine');
  const misfit = { ...base, schemaMismatchFiles: [{ key: 'grid_partition=a/year=2020/p.parquet', reason: "column 'x' is string in the file, long in the table" }], schemaMismatchFilesTotal: 3 };
  const text = formatSummary(misfit);
  assert.match(text, /^schema mismatch \(registered, readers fail on it or misread it\) grid_partition=a\/year=2020\/p\.parquet: column 'x' is string in the file, long in the table$/m);
  assert.match(text, /^… and 2 more files with a schema mismatch$/m);
  assert.equal(exitCodeOf(misfit), EXIT_NEEDS_ATTENTION);
});

test('files another writer registered outside the layout, no longer listed by the rebuilt table, are named and need attention', () => {
  const dropped = { ...base, droppedRegistrations: [{ key: '/data/warehouse/grid_partition=a/year=2020/sub/x.parquet', reason: 'registered by another writer' }], droppedRegistrationsTotal: 1 };
  assert.match(formatSummary(dropped), /^no longer registered \/data\/warehouse\/grid_partition=a\/year=2020\/sub\/x\.parquet: registered by another writer$/m);
  assert.equal(exitCodeOf(dropped), EXIT_NEEDS_ATTENTION);
  assert.match(formatSummary({ ...dropped, droppedRegistrationsTotal: 4 }), /^… and 3 more files no longer registered$/m);
});

test('unreadable files get a line each, then one counting those the list left out', () => {
  const s = { ...base, unreadableFiles: [{ key: 'grid_partition=a/year=2020/part_1.parquet', reason: 'not a Parquet file' }], unreadableFilesTotal: 3 };
  assert.match(formatSummary(s), /^unreadable \(not registered\) grid_partition=a\/year=2020\/part_1\.parquet: not a Parquet file\n… and 2 more unreadable files$/m);
  assert.doesNotMatch(formatSummary({ ...s, unreadableFilesTotal: 1 }), /more unreadable files/);
});

test('objects the plan left alone under bucket folders are counted in a line of their own (routine, exit 0)', () => {
  assert.doesNotMatch(formatSummary(base), /left alone/);
  const ignored = { ...base, objectsIgnored: 3 };
  assert.match(formatSummary(ignored), /^3 object\(s\) under bucket folders were left alone: not data files of the layout/m);
  assert.equal(exitCodeOf(ignored), 0);
  assert.doesNotMatch(formatSummary(ignored), /look like Parquet/);
  const stray = { ...ignored, objectsIgnoredParquetLike: ['grid_partition=a/year=2020/x.PARQUET'], objectsIgnoredParquetLikeTotal: 2 };
  assert.match(formatSummary(stray), /^2 of them look like Parquet data, whose rows no reader of the table sees: .*: grid_partition=a\/year=2020\/x\.PARQUET … and 1 more$/m);
  assert.equal(exitCodeOf(stray), 0);
});

const progress: CompactionProgress = { ...initialProgress(), planId: 'p1', bucketsTotal: 10 };

test('progress on a log (not a terminal): a line per phase change, and while buckets complete at most one every 30 s', () => {
  const lines: string[] = [];
  let clock = 0;
  const renderer = createProgressRenderer({ isTTY: false, columns: 100, write: (s: string) => (lines.push(s), true) } as Parameters<typeof createProgressRenderer>[0], () => clock);
  const at = (ms: number, phase: CompactionProgress['phase'], done: number) => {
    clock = ms;
    renderer.update({ ...progress, phase, bucketsDone: done });
  };
  at(0, 'planning', 0);
  at(1_000, 'compacting', 0);
  at(10_000, 'compacting', 3);
  at(LOG_LINE_EVERY_MS + 1_000, 'compacting', 5);
  at(LOG_LINE_EVERY_MS + 2_000, 'compacting', 6);
  // Bucket 6 completed since the last line: shown once its 30 s are up.
  at(3 * LOG_LINE_EVERY_MS, 'compacting', 6);
  at(5 * LOG_LINE_EVERY_MS, 'compacting', 6);
  at(3 * LOG_LINE_EVERY_MS + 1, 'rebuilding-catalog', 10);
  assert.deepEqual(
    lines.map((l) => /(\d+)\/10 buckets .* · (\S+)\n$/.exec(l)!.slice(1).join(' ')),
    ['0 planning', '0 compacting', '5 compacting', '6 compacting', '10 rebuilding-catalog'],
  );
});

test('progress on a log: a run waiting for a lock gets a line again once it knows who holds it, and when that changes', () => {
  const lines: string[] = [];
  const renderer = createProgressRenderer({ isTTY: false, columns: 100, write: (s: string) => (lines.push(s), true) } as Parameters<typeof createProgressRenderer>[0], () => 0);
  const waiting = (status: 'requested' | 'queued', holder: string | null) => ({
    ...progress,
    phase: 'waiting-for-lock' as const,
    locks: [{ lockId: 'warehouse:/data/warehouse', status, holder, position: 1, fence: null }],
  });
  renderer.update(waiting('requested', null));
  renderer.update(waiting('queued', 'adhoc-1'));
  renderer.update(waiting('queued', 'adhoc-1'));
  renderer.update(waiting('queued', 'weekly-2026-12-06T03:00:00Z'));
  assert.deepEqual(
    lines.map((l) => / · (waiting-for-lock.*)\n$/.exec(l)![1]),
    ['waiting-for-lock', 'waiting-for-lock (held by adhoc-1)', 'waiting-for-lock (held by weekly-2026-12-06T03:00:00Z)'],
  );
});

test('buckets that left the table because the warehouse no longer has them get a line with their rows, without exit code 3', () => {
  const s = { ...base, catalogBucketsGone: ['grid_partition=a/year=2020', 'grid_partition=b/year=2021'], catalogBucketsGoneTotal: 3, catalogRowsGone: 120 };
  assert.match(
    formatSummary(s),
    /^3 bucket\(s\) the table listed are no longer in the warehouse \(deleted outside this tool\?\), so their 120 row\(s\) left the table: grid_partition=a\/year=2020, grid_partition=b\/year=2021 … and 1 more$/m,
  );
  assert.equal(exitCodeOf(s), 0);
  assert.doesNotMatch(formatSummary(base), /no longer in the warehouse/);
});

test('a file holding a renamed column under both names is told the compaction that merges them, with the command for a file alone in its bucket', () => {
  const key = 'grid_partition=8128bffffffffff/year=2023/compacted_p1.parquet';
  const s = { ...base, schemaMismatchFiles: [{ key, reason: "columns 'collection' and 'coll' are both names of the table's column 'coll' (renamed), and readers read only one of them" }], schemaMismatchFilesTotal: 1 };
  const text = formatSummary(s);
  assert.match(text, /^the next compaction of their bucket writes the two names of a renamed column as one, under the new name: grid_partition=8128bffffffffff\/year=2023\/compacted_p1\.parquet \(alone in its bucket: compact --threshold 1 --cells 8128bffffffffff --years 2023\)$/m);
  assert.doesNotMatch(text, /stays unreadable/);
});

test("files registered again after a delete through the table, and the tags and branches the rebuild dropped, get a line each, without exit code 3", () => {
  const s = {
    ...base,
    catalogRegisteredAgain: ['grid_partition=a/year=2020/compacted_p1.parquet'],
    catalogRegisteredAgainTotal: 2,
    catalogDroppedRefs: ['audit-2026w49', 'dev'],
    catalogDroppedRefsTotal: 2,
  };
  const text = formatSummary(s);
  assert.match(text, /^2 data file\(s\) that another writer took out of the table since the last compaction \(a delete through the table\?\) are registered again, .*rows deleted through the table are back.*: grid_partition=a\/year=2020\/compacted_p1\.parquet … and 1 more$/m);
  assert.match(text, /^the rebuilt table has one snapshot and only main: tags and branches audit-2026w49, dev were dropped \(commits made only on a branch are not in the table/m);
  assert.equal(exitCodeOf(s), 0);
  assert.doesNotMatch(formatSummary(base), /registered again|tags and branches/);
});

test('buckets planned below the threshold for a Null-typed column get a line naming them, in the tense of the run, without exit code 3', () => {
  const s = { ...base, nullTypedBuckets: ['grid_partition=a/year=2020'], nullTypedBucketsTotal: 2 };
  assert.match(
    formatSummary(s),
    /^2 bucket\(s\) below the threshold were planned too, because a file there has a column or struct field of Parquet's Null type, which Iceberg readers cannot read \(compaction leaves it out; the table reads it as null\): grid_partition=a\/year=2020 … and 1 more$/m,
  );
  assert.match(formatSummary({ ...s, dryRun: true }), /^2 bucket\(s\) below the threshold would be planned too/m);
  assert.equal(exitCodeOf(s), 0);
  assert.doesNotMatch(formatSummary(base), /Null type/);
});

test('buckets planned below the threshold for a number column the table types otherwise get a line naming them, in the tense of the run, without exit code 3', () => {
  const s = { ...base, retypedBuckets: ['grid_partition=a/year=2020', 'grid_partition=b/year=2020'], retypedBucketsTotal: 2 };
  assert.match(
    formatSummary(s),
    /^2 bucket\(s\) below the threshold were planned too, because a file there has a number column the table types otherwise \(an integer in a double column, a float in a long one\), which Iceberg readers cannot read \(compaction writes the table's type where no value changes\): grid_partition=a\/year=2020, grid_partition=b\/year=2020$/m,
  );
  assert.match(formatSummary({ ...s, dryRun: true }), /^2 bucket\(s\) below the threshold would be planned too, because a file there has a number column/m);
  assert.equal(exitCodeOf(s), 0);
  assert.doesNotMatch(formatSummary(base), /table types otherwise/);
});

test('schema mismatches are listed with lines saying which the next run repairs and which stay, and exit code 3', () => {
  const mismatch = (key: string, reason: string) => ({ key: `grid_partition=${key}/year=2020/compacted_x.parquet`, reason });
  const longInDouble = mismatch('a', "column 'n' is long in the file, double in the table");
  const doubleInLong = mismatch('b', "column 'percent_valid_pixels' is double in the file, long in the table");
  const both = mismatch('c', "column 'n' is int in the file, double in the table; column 'platform' is long in the file, string in the table");
  const text = (files: { key: string; reason: string }[], total = files.length) => formatSummary({ ...base, schemaMismatchFiles: files, schemaMismatchFilesTotal: total });

  const repaired = text([longInDouble]);
  assert.match(repaired, /^schema mismatch \(registered, readers fail on it or misread it\) grid_partition=a\/year=2020\/compacted_x\.parquet: column 'n' is long in the file, double in the table$/m);
  assert.match(repaired, /^the next run rewrites these as the table types them if each integer is exactly a double, up to 2\^53 in magnitude \(integers in a double column\): grid_partition=a\/year=2020\/compacted_x\.parquet$/m);
  assert.doesNotMatch(repaired, /stay/);
  const stays = text([doubleInLong]);
  assert.match(stays, /^it stays unreadable until the file is rewritten: no run changes a value to fit the table/m);
  assert.doesNotMatch(stays, /next run/);
  const mixed = text([longInDouble, doubleInLong, both], 5);
  assert.match(mixed, /^the next run rewrites 1 as the table types them if each integer is exactly a double, up to 2\^53 in magnitude \(integers in a double column\): grid_partition=a\/year=2020\/compacted_x\.parquet$/m);
  assert.match(mixed, /^the other 4 stay unreadable until the file is rewritten/m);
  // Floats in a long column: the next plan reads a delivered file or an output no worker vouched for again.
  const delivered = { key: 'grid_partition=d/year=2020/part_1.parquet', reason: doubleInLong.reason };
  const untyped = mismatch('e', doubleInLong.reason);
  const reread = formatSummary({ ...base, schemaMismatchFiles: [delivered, untyped, doubleInLong], schemaMismatchFilesTotal: 3, untypedOutputs: ['grid_partition=e/year=2020'], untypedOutputsTotal: 1 });
  assert.match(reread, /^the next run rewrites 2 as the table types them if their values are whole \(floats in a long column\): grid_partition=d\/year=2020\/part_1\.parquet, grid_partition=e\/year=2020\/compacted_x\.parquet$/m);
  assert.match(reread, /^the other 1 stays unreadable until the file is rewritten/m);
  const cut = formatSummary({ ...base, schemaMismatchFiles: [doubleInLong], schemaMismatchFilesTotal: 1, untypedOutputs: [], untypedOutputsTotal: 300 });
  assert.match(cut, /^the next run rewrites these as the table types them if their values are whole/m, 'every output is read again when the list was cut');
  assert.doesNotMatch(cut, /stay/);
  // A bucket that failed in this run rewrote nothing, and the next run rewrites nothing of it unless it compacts.
  const failedBucket = { bucket: 'grid_partition=d/year=2020', type: 'BucketExceedsMemoryBudget', reason: 'DuckDB ran out of its memory limit' };
  const waiting = formatSummary({
    ...base,
    failedBuckets: [failedBucket],
    failedBucketsTotal: 1,
    schemaMismatchFiles: [longInDouble, { key: delivered.key, reason: longInDouble.reason }],
    schemaMismatchFilesTotal: 2,
  });
  assert.match(waiting, /^1 in buckets that failed otherwise \(below\) stay as they are until their bucket compacts: grid_partition=d\/year=2020\/part_1\.parquet$/m);
  assert.match(waiting, /^the next run rewrites 1 as the table types them if each integer .*: grid_partition=a\/year=2020\/compacted_x\.parquet$/m);
  assert.doesNotMatch(waiting, /stays? unreadable/);
  // A bucket that failed on its data (the mismatched file's type may be the conflict) waits for a file to be rewritten.
  const onItsData = formatSummary({
    ...base,
    failedBuckets: [{ ...failedBucket, type: 'BadBucketData', reason: "column 'n' has conflicting types" }],
    failedBucketsTotal: 1,
    schemaMismatchFiles: [{ key: delivered.key, reason: "column 'n' is string in the file, long in the table" }],
    schemaMismatchFilesTotal: 1,
  });
  assert.match(onItsData, /^these in buckets that failed on their data \(below\) stay as they are until the file each failure names is rewritten and the bucket compacts: grid_partition=d\/year=2020\/part_1\.parquet$/m);
  assert.doesNotMatch(onItsData, /until their bucket compacts|next run rewrites|stays? unreadable/);
  assert.equal(exitCodeOf({ ...base, schemaMismatchFiles: [longInDouble], schemaMismatchFilesTotal: 1 }), 3);
  assert.doesNotMatch(formatSummary(base), /next run rewrites|until the file is rewritten/);
});

test("status counts the started bucket activities silent for over 20 s (a killed worker's, until their heartbeat timeout), nothing else; and a rebuild silent as long", () => {
  const now = 1_800_000_000_000;
  const at = (msAgo: number) => ({ seconds: Math.floor((now - msAgo) / 1000), nanos: ((now - msAgo) % 1000) * 1e6 });
  const STARTED = 2;
  const SCHEDULED = 1;
  const bucket = { activityType: { name: 'compactBucket' }, state: STARTED };
  assert.equal(silentBucketCount([{ ...bucket, lastHeartbeatTime: at(25_000) }], now), 1);
  assert.equal(silentBucketCount([{ ...bucket, lastHeartbeatTime: at(9_000) }], now), 0, 'heartbeating');
  assert.equal(silentBucketCount([{ ...bucket, lastHeartbeatTime: at(19_000) }], now), 0, 'within two heartbeats');
  assert.equal(silentBucketCount([{ ...bucket, lastStartedTime: at(25_000) }], now), 1, 'started, never a heartbeat');
  assert.equal(silentBucketCount([{ ...bucket, lastStartedTime: at(2_000) }], now), 0, 'just started');
  // Waiting on the server for a worker with a free slot: not lost, only queued.
  assert.equal(silentBucketCount([{ ...bucket, state: SCHEDULED, lastHeartbeatTime: at(60_000) }], now), 0);
  assert.equal(silentBucketCount([{ activityType: { name: 'rebuildCatalog' }, state: STARTED, lastHeartbeatTime: at(60_000) }], now), 0, 'buckets only');
  assert.equal(
    silentBucketCount([{ ...bucket, lastHeartbeatTime: at(31_000) }, { ...bucket, lastHeartbeatTime: at(1_000) }, { ...bucket, lastHeartbeatTime: at(21_000) }], now),
    2,
  );
  assert.match(silentBucketsNote(2), /^2 bucket\(s\) without a heartbeat for over 20 s \(their worker gone\?/);
  // The rebuild: its worker sends every 10 s heartbeat too, so silence counts past the same 20 s.
  const rebuild = { activityType: { name: 'rebuildCatalog' }, state: STARTED };
  assert.equal(silentRebuild([{ ...rebuild, lastHeartbeatTime: at(19_000) }], now), false, 'within two heartbeats');
  assert.equal(silentRebuild([{ ...rebuild, lastHeartbeatTime: at(25_000) }], now), true);
  assert.equal(silentRebuild([{ ...rebuild, lastStartedTime: at(25_000) }], now), true, 'started, never a heartbeat');
  assert.equal(silentRebuild([{ ...rebuild, lastHeartbeatTime: at(200_000), lastStartedTime: at(5_000) }], now), false, 'a retried attempt, just started: its predecessor\'s heartbeat does not count');
  assert.equal(silentBucketCount([{ ...bucket, lastHeartbeatTime: at(60_000), lastStartedTime: at(3_000) }], now), 0, 'so for a bucket');
  assert.equal(silentRebuild([{ ...rebuild, state: SCHEDULED, lastStartedTime: at(90_000) }], now), false, 'waiting for a worker is not silence');
  assert.equal(silentRebuild([{ ...bucket, lastHeartbeatTime: at(90_000) }], now), false, 'the rebuild only');
  assert.match(silentRebuildNote(), /^the catalog rebuild without a heartbeat for over 20 s \(its worker gone\? it is retried on another after the 30 s heartbeat timeout/);
  // A run scheduled by an earlier release keeps its timeouts (its rebuild had 2 minutes): the server says which.
  const earlier = { ...rebuild, activityOptions: { heartbeatTimeout: { seconds: 120, nanos: 0 } } };
  assert.equal(heartbeatTimeoutSeconds([earlier, bucket], 'rebuildCatalog'), 120);
  assert.equal(heartbeatTimeoutSeconds([bucket], 'compactBucket'), 30, 'not said: this release\'s');
  assert.match(silentRebuildNote(120), /retried on another after the 120 s heartbeat timeout/);
  // The planning (minutes of listing on a real warehouse): the same 20 s.
  const plan = { activityType: { name: 'planCompaction' }, state: STARTED };
  assert.equal(silentPlan([{ ...plan, lastHeartbeatTime: at(19_000) }], now), false, 'within two heartbeats');
  assert.equal(silentPlan([{ ...plan, lastHeartbeatTime: at(25_000) }], now), true);
  assert.equal(silentPlan([{ ...plan, state: SCHEDULED, lastStartedTime: at(90_000) }], now), false, 'waiting for a worker is not silence');
  assert.equal(silentPlan([{ ...rebuild, lastHeartbeatTime: at(90_000) }], now), false, 'the planning only');
  assert.match(silentPlanNote(), /^the planning without a heartbeat for over 20 s \(its worker gone\? it is retried on another after the 30 s heartbeat timeout, listing the warehouse again\)$/);
});

test('status tells a catalog rebuild due for over 20 s that no worker has taken (its worker lost, none left), and nothing else', () => {
  const now = 1_800_000_000_000;
  const at = (msAgo: number) => ({ seconds: Math.floor((now - msAgo) / 1000), nanos: ((now - msAgo) % 1000) * 1e6 });
  const SCHEDULED = 1;
  const STARTED = 2;
  const rebuild = { activityType: { name: 'rebuildCatalog' }, state: SCHEDULED, attempt: 2 };
  assert.deepEqual(waitingRebuild([{ ...rebuild, scheduledTime: at(45_000), lastHeartbeatTime: at(80_000) }], now), { attempt: 2, sinceMs: 45_000 });
  assert.equal(waitingRebuild([{ ...rebuild, scheduledTime: at(15_000) }], now), undefined, 'just due: a worker takes it within a poll');
  assert.equal(waitingRebuild([{ ...rebuild, scheduledTime: { seconds: Math.floor((now + 4_000) / 1000), nanos: 0 } }], now), undefined, 'in its retry backoff');
  assert.equal(waitingRebuild([{ ...rebuild, state: STARTED, scheduledTime: at(45_000) }], now), undefined, 'taken');
  assert.equal(waitingRebuild([{ ...rebuild, activityType: { name: 'compactBucket' }, scheduledTime: at(45_000) }], now), undefined, 'buckets wait by design');
  assert.equal(waitingRebuild([{ ...rebuild, scheduledTime: null }], now), undefined);
  const note = waitingRebuildNote({ attempt: 2, sinceMs: 45_400 }, 'earth catalog', ['--address', 'h:7233']);
  assert.equal(
    note,
    "the catalog rebuild (attempt 2: the one before lost its worker, or failed) has waited 45 s for a worker: is a worker running on task queue earth catalog? earthcatalog-compact worker --task-queue 'earth catalog' --address h:7233",
  );
  assert.match(waitingRebuildNote({ attempt: 1, sinceMs: 30_000 }, 'q'), /^the catalog rebuild has waited 30 s for a worker: is a worker running on task queue q\? earthcatalog-compact worker --task-queue q$/);
});

test("status's warning of a stale table says why its run failed, and, when a schedule started it, which one: one warning, not two", () => {
  const input = parseCompactionInput({ warehouse: '/data/warehouse', catalog: '/data/catalog.db' });
  const run = { workflowId: 'weekly-2026-12-06T03:00:00Z', runId: 'r1', status: 'FAILED', taskQueue: 'earthcatalog-compaction', closeTime: new Date('2026-12-06T03:20:00Z'), input };
  const schedule = { scheduleId: 'weekly', paused: false, workflowId: run.workflowId, status: 'FAILED', error: 'workflow failed: catalog /data/catalog.db is not an SQLite database' };
  const connection = ['--address', 'temporal:7233'];
  const warning = interruptedWarning(run, connection, schedule.error, schedule);
  assert.equal(
    warning.message,
    'warning: the latest compaction of /data/warehouse, weekly-2026-12-06T03:00:00Z (the latest run of schedule weekly, which starts its next run as planned), ' +
      'was FAILED at 2026-12-06T03:20:00.000Z (workflow failed: catalog /data/catalog.db is not an SQLite database): if it had compacted buckets, ' +
      'the table earthcatalog.stac_items in /data/catalog.db lists files they deleted until a run rebuilds it. Once that is fixed, finish it: ' +
      'earthcatalog-compact resume --warehouse /data/warehouse --catalog /data/catalog.db --address temporal:7233',
  );
  // --json: one object per line on stderr, for scripts: what it is about and the command that acts on it.
  assert.equal(warningLine(warning, false), warning.message);
  assert.deepEqual(JSON.parse(warningLine(warning, true)), {
    warning: 'stale-table',
    message: warning.message,
    workflowId: run.workflowId,
    warehouse: '/data/warehouse',
    catalog: '/data/catalog.db',
    namespace: 'earthcatalog',
    table: 'stac_items',
    scheduleId: 'weekly',
    command: 'earthcatalog-compact resume --warehouse /data/warehouse --catalog /data/catalog.db --address temporal:7233',
  });
  assert.equal(warningLine(warning, true).includes('\n'), false, 'one line');
  assert.match(interruptedWarning({ ...run, status: 'TERMINATED' }, connection).message, /, was TERMINATED at \S+: if it had compacted .* Finish it: earthcatalog-compact resume /);
  // The warehouse's newest plan finished by a run for another table: a resume would be refused, a compaction rebuilds this table.
  assert.match(
    interruptedWarning(run, connection, schedule.error, undefined, { workflowId: 'by-hand', closeTime: '2026-12-06T04:00:00.000Z' }).message,
    / the table earthcatalog\.stac_items in \/data\/catalog\.db lists files they deleted until a run rebuilds it\. A run of the warehouse for another table, by-hand, completed at 2026-12-06T04:00:00\.000Z with a newer plan, so no resume finishes this one: once that is fixed, rebuild this table with earthcatalog-compact --warehouse \/data\/warehouse --catalog \/data\/catalog\.db --address temporal:7233$/,
  );
});

test('the progress bar stays within its width whatever the counts say (more buckets done than planned, none planned)', () => {
  for (const [done, total] of [[7, 6], [3, 0], [0, 0], [6, 6]] as const) {
    const line = progressLine({ ...initialProgress(), bucketsDone: done, bucketsTotal: total }, 120);
    assert.match(line, new RegExp(`^\\[[#.]{40}\\] ${done}/${total} buckets`), line);
  }
});

test('files with rows outside the partition of their path get a line each (capped, with the rest counted), without exit code 3', () => {
  const s = { ...base, partitionMismatchFiles: [{ key: 'grid_partition=a/year=2024/compacted_p1.parquet', reason: '5 of 80 rows are in 2025' }], partitionMismatchFilesTotal: 3 };
  const text = formatSummary(s);
  assert.match(text, /^rows outside the partition of their path \(registered; filters on grid_partition or datetime skip them\) grid_partition=a\/year=2024\/compacted_p1\.parquet: 5 of 80 rows are in 2025$/m);
  assert.match(text, /^… and 2 more files with rows outside the partition of their path$/m);
  assert.equal(exitCodeOf(s), 0);
  assert.doesNotMatch(formatSummary(base), /outside the partition/);
});

test('a run that ended without completing reaches an API caller as CompactionEndedError with the failure type it failed with', () => {
  assert.equal(PackageRootEndedError, CompactionEndedError, 'exported from the package root');
  // The workflow's own failure (a lock not granted in time), and an activity's below the workflow's (a plan that is gone).
  const lockTimeout = new WorkflowFailedError('Workflow execution failed', ApplicationFailure.nonRetryable('warehouse lock not granted within 0 s', 'LockTimeout'), RetryState.NON_RETRYABLE_FAILURE);
  assert.equal(failureTypeOf(lockTimeout), 'LockTimeout');
  const planGone = new WorkflowFailedError(
    'Workflow execution failed',
    new ActivityFailure('activity failed', 'loadPlan', '3', RetryState.NON_RETRYABLE_FAILURE, 'worker', ApplicationFailure.nonRetryable('no plan p in /w', 'PlanNotFound')),
    RetryState.NON_RETRYABLE_FAILURE,
  );
  assert.equal(failureTypeOf(planGone), 'PlanNotFound');
  assert.equal(failureTypeOf(new Error('connection reset')), undefined);
  const ended = new CompactionEndedError('workflow failed: no plan p in /w', failureTypeOf(planGone), { cause: planGone });
  assert.equal(ended.failureType, 'PlanNotFound');
  assert.equal(ended.cause, planGone);
});

test('a note of several paused activities gives the unpause command of each', () => {
  const note = pausedNote('run-1', [
    { activityId: '7', activityType: 'compactBucket' },
    { activityId: '9', activityType: 'compactBucket' },
  ]);
  assert.match(note, /^2 bucket\(s\) paused \(activity ids 7, 9\): the run waits, holding its locks, until each is unpaused: /);
  assert.match(note, /temporal activity unpause .*--activity-id 7; temporal activity unpause .*--activity-id 9$/);
});
