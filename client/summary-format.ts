import { FailureTypes, isS3TablesCatalog, type BucketSelection, type CompactionSummary, type UnreadableFile } from '../workflows/contract';
import { isOutputKey, parseDataFileKey } from '../activities/storage/warehouse-layout';

/**
 * Exit code 3: the run finished, but something needs a person: buckets failed (their files are
 * untouched), data files could not be registered in the table (readers do not see their rows), or
 * registered files have columns readers cannot read as the table's (scans touching them fail), or files
 * another writer registered outside the layout are no longer listed. A
 * cron wrapper or the schedule's alerting notices either; both are listed in the summary.
 */
export const EXIT_NEEDS_ATTENTION = 3;

export function exitCodeOf(s: CompactionSummary): number {
  const attention = s.failedBucketsTotal + s.unreadableFilesTotal + (s.schemaMismatchFilesTotal ?? 0) + (s.droppedRegistrationsTotal ?? 0);
  return attention > 0 ? EXIT_NEEDS_ATTENTION : 0;
}

/** A mismatch a compaction of the file's bucket repairs: the file holds a renamed column under its old and its new name (renamedColumnMerges). */
function mergedByCompaction(reason: string): boolean {
  return reason.split('; ').every((p) => /^columns '.+' and '.+' are both names of the table's column '.+' \(renamed\)/.test(p));
}

/**
 * A mismatch the next run repairs (tableTypeCasts) when every integer is exactly a double: every problem
 * of the file an integer column the table types double. The planner reads such an output again because
 * the column's type is new to the table.
 */
function repairedByNextRun(reason: string): boolean {
  return reason.split('; ').every((p) => /^column '.+' is (int|long) in the file, double in the table$/.test(p));
}

/**
 * A mismatch the next run repairs when the file's values are whole (tableTypeCasts): every problem of the
 * file a float column the table types long, in a file the next plan reads again (a delivered file, or an
 * output this run cannot vouch for: untypedOutputs). An output written with the table's types kept its
 * floats because one of them has a fraction, and stays.
 */
function repairedIfWhole(m: UnreadableFile, s: CompactionSummary): boolean {
  // untypedOutputs names buckets.
  const readAgain = !isOutputKey(m.key) || (s.untypedOutputs ?? []).includes(bucketOf(m)) || (s.untypedOutputsTotal ?? 0) > (s.untypedOutputs?.length ?? 0);
  return readAgain && m.reason.split('; ').every((p) => /^column '.+' is (float|double) in the file, (int|long) in the table$/.test(p));
}

/** The bucket (prefix) of a registered file: every data file lies directly in its bucket's folder. */
function bucketOf(m: UnreadableFile): string {
  return m.key.slice(0, m.key.lastIndexOf('/'));
}

function partition<T>(items: readonly T[], test: (item: T) => boolean): [T[], T[]] {
  return [items.filter(test), items.filter((item) => !test(item))];
}

/** The seed's four figures first (same names), then what this tool adds. */
export function formatSummary(s: CompactionSummary, selection: BucketSelection = {}): string {
  const rows: [string, string | number][] = [
    ['buckets_scanned', s.bucketsScanned],
    ['buckets_compacted', s.bucketsCompacted],
    ['files_before', s.filesBefore],
    ['files_after', s.filesAfter],
    ['rows_before', s.rowsBefore],
    ['rows_after', s.rowsAfter],
    ['duplicates_removed', s.duplicatesRemoved],
    ['bytes_before', s.bytesBefore],
    ['bytes_after', s.bytesAfter],
    ['failed_buckets', s.failedBucketsTotal],
    ['snapshot_id', s.snapshotId ?? '-'],
    ['catalog_files', s.catalogDataFiles ?? '-'],
    ['catalog_rows', s.catalogRows ?? '-'],
    ['metadata_files_expired', s.catalogMetadataFilesExpired ?? '-'],
    ['unreadable_files', s.unreadableFilesTotal],
    // A dry run writes no plan: its id names nothing `resume --plan` could find.
    ['plan_id', s.dryRun ? `${s.planId} (dry run: not written)` : s.planId],
  ];
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  const lines = rows.map(([k, v]) => `${(k + ':').padEnd(width)}${v}`);
  if (s.dryRun) {
    // A real run rebuilds the table even with nothing to compact: it registers what was delivered since.
    const head = `dry run: nothing was changed; ${s.bucketsCompacted} bucket(s) would be compacted and the table rebuilt from the files as they are then`;
    const unlisted = s.bucketsCompacted - s.sampleBuckets.length;
    lines.unshift(
      s.sampleBuckets.length ? `${head}, the largest:` : head,
      ...s.sampleBuckets.map((b) => `  ${b}`),
      // The plan's sample is bounded (a whole warehouse is thousands of buckets): say that it is one.
      ...(s.sampleBuckets.length && unlisted > 0 ? [`  … and ${unlisted} more`] : []),
    );
  }
  if (s.bucketsScanned === 0 && (selection.cells || selection.years) && s.catalogDataFiles !== 0) {
    const given = [selection.cells && `--cells ${selection.cells.join(',')}`, selection.years && `--years ${selection.years.join(',')}`].filter(Boolean).join(' ');
    const spelling = selection.cells
      ? ': a cell matches only the folder grid_partition=<cell> spelled the same, byte for byte (an accented letter typed in one Unicode form does not match a folder named in the other)'
      : '';
    lines.push(`no bucket of ${s.warehouse} is in the selection (${given})${spelling}`);
  }
  // A dry run takes no lock (the Python tool's took the pipeline's and failed at once when it was held): what a
  // run would find. A run: whose stale object it took over, which the Python tool warned of too.
  if (s.pipelineLock) lines.push(`--use-lock: ${s.pipelineLock}`);
  if (s.objectsIgnored) {
    lines.push(
      `${s.objectsIgnored} object(s) under bucket folders were left alone: not data files of the layout (a subfolder, a name starting with . or _), ` +
        'or data files that cannot be compacted (a glob or control character in the key); the rebuilt table registers only data files',
    );
  }
  if (s.objectsIgnoredParquetLike?.length) {
    const named = namedSample(s.objectsIgnoredParquetLike, s.objectsIgnoredParquetLikeTotal);
    lines.push(
      `${named.total} of them look like Parquet data, whose rows no reader of the table sees: move each to its bucket folder as <name>.parquet ` +
        `(grid_partition=<cell>/year=<yyyy>/, a cell without '/' or '=', which Hive writers escape as %2F and %3D), or away: ${named.list}`,
    );
  }
  // A resume counts among buckets_compacted those an interrupted run had finished: say how many.
  if (s.bucketsAlreadyCompacted) lines.push(`${s.bucketsAlreadyCompacted} of the compacted bucket(s) had been finished by an earlier attempt or run (resume), not redone`);
  if (s.filesDeferred) lines.push(`${s.filesDeferred} file(s) of buckets too large for one task were left for the next run`);
  if (s.nullTypedBuckets?.length) {
    const named = namedSample(s.nullTypedBuckets, s.nullTypedBucketsTotal);
    lines.push(
      `${named.total} bucket(s) below the threshold ${s.dryRun ? 'would be' : 'were'} planned too, because a file there has a column or struct field of Parquet's Null type, ` +
        `which Iceberg readers cannot read (compaction leaves it out; the table reads it as null): ${named.list}`,
    );
  }
  if (s.retypedBuckets?.length) {
    const named = namedSample(s.retypedBuckets, s.retypedBucketsTotal);
    lines.push(
      `${named.total} bucket(s) below the threshold ${s.dryRun ? 'would be' : 'were'} planned too, because a file there has a number column the table types otherwise ` +
        `(an integer in a double column, a float in a long one), which Iceberg readers cannot read (compaction writes the table's type where no value changes): ${named.list}`,
    );
  }
  if (s.catalogDeleteFilesDropped) {
    lines.push(`${s.catalogDeleteFilesDropped} delete file(s) of another engine were not carried over: the rows they deleted are visible again`);
  }
  if (s.catalogTableCreated) {
    // A mistyped --catalog, --table or --catalog-name creates a table beside the real one, which keeps listing the deleted inputs.
    // S3 Tables has no catalog name (the flag is not used there).
    const names = isS3TablesCatalog(s.catalog) ? '--iceberg-namespace and --table' : '--iceberg-namespace, --table and --catalog-name';
    lines.push(
      s.dryRun
        ? `the table does not exist in ${s.catalog}: the run would create it. If you meant an existing table, check --catalog, ${names}`
        : `the table did not exist in ${s.catalog} and was created, as on a first run: if you meant an existing table, check --catalog, ${names} ` +
            '(the table you meant still lists the files this run replaced until a run with its names rebuilds it)',
    );
    // A --warehouse one folder too high or too low finds no bucket at all, and a fresh catalog takes that for an empty warehouse.
    // With a selection, only a table of no file at all says so: the rebuild lists the whole warehouse.
    if (s.bucketsScanned === 0 && !s.objectsIgnoredParquetLike?.length && (!(selection.cells || selection.years) || s.catalogDataFiles === 0)) {
      lines.push(`no data file of the layout (grid_partition=<cell>/year=<yyyy>/<name>.parquet) is directly under ${s.warehouse}, so the table ${s.dryRun ? 'would be' : 'is'} empty: check --warehouse`);
    }
  }
  if (s.catalogSchemaEvolved) {
    const { schemaId, added, widened } = s.catalogSchemaEvolved;
    const what = [added.length ? `columns added: ${added.join(', ')}` : '', widened.length ? `types widened: ${widened.join(', ')}` : ''].filter(Boolean);
    lines.push(`the files needed a new table schema (${schemaId}); ${what.join('; ')}`);
  }
  fileLines(lines, s.schemaMismatchFiles, s.schemaMismatchFilesTotal, 'schema mismatch (registered, readers fail on it or misread it)', 'files with a schema mismatch');
  if (s.schemaMismatchFilesTotal) {
    // Which of these go away by themselves decides whether anyone has to act.
    // A bucket that failed in this run rewrote nothing. One that failed for a reason other than its data
    // (memory, storage, a concurrent run) may compact next time; one that failed on its data (a type
    // conflict, which the mismatched file may itself cause) does not until the file its failure names is rewritten.
    const failedOn = new Map(s.failedBuckets.map((f) => [f.bucket, f.type]));
    const [inFailed, listed] = partition(s.schemaMismatchFiles ?? [], (m) => failedOn.has(bucketOf(m)));
    const [stuck, waiting] = partition(inFailed, (m) => failedOn.get(bucketOf(m)) === FailureTypes.badBucketData);
    const repaired = listed.filter((m) => repairedByNextRun(m.reason)).map((m) => m.key);
    const ifWhole = listed.filter((m) => repairedIfWhole(m, s)).map((m) => m.key);
    const merged = listed.filter((m) => mergedByCompaction(m.reason));
    const others = s.schemaMismatchFilesTotal - inFailed.length - repaired.length - ifWhole.length - merged.length;
    const these = (n: number) => (n === s.schemaMismatchFilesTotal ? 'these' : n);
    if (stuck.length) {
      lines.push(
        `${these(stuck.length)} in buckets that failed on their data (below) stay as they are until the file each failure names is rewritten and the bucket compacts: ` +
          stuck.map((m) => m.key).join(', '),
      );
    }
    if (waiting.length) {
      lines.push(`${these(waiting.length)} in buckets that failed otherwise (below) stay as they are until their bucket compacts: ${waiting.map((m) => m.key).join(', ')}`);
    }
    if (repaired.length) {
      lines.push(
        `the next run rewrites ${these(repaired.length)} as the table types them if each integer is exactly a double, up to 2^53 in magnitude (integers in a double column): ${repaired.join(', ')}`,
      );
    }
    if (ifWhole.length) {
      lines.push(`the next run rewrites ${these(ifWhole.length)} as the table types them if their values are whole (floats in a long column): ${ifWhole.join(', ')}`);
    }
    if (merged.length) {
      // Such a file is planned only with the threshold's other files; alone in its bucket it needs a threshold of 1.
      const commands = merged.map((m) => {
        const bucket = parseDataFileKey(m.key)?.bucket;
        return `${m.key} (alone in its bucket: compact --threshold 1 --cells ${bucket?.cell} --years ${bucket?.year})`;
      });
      lines.push(`the next compaction of their bucket writes the two names of a renamed column as one, under the new name: ${commands.join(', ')}`);
    }
    if (others) {
      const some = inFailed.length + repaired.length + ifWhole.length + merged.length;
      lines.push(
        `${some ? `the other ${others}` : others === 1 ? 'it' : `these ${others}`} ${others === 1 ? 'stays' : 'stay'} unreadable until the file is rewritten: ` +
          'no run changes a value to fit the table (README: "Decisions", schema)',
      );
    }
  }
  if (s.catalogRegisteredAgain?.length) {
    const named = namedSample(s.catalogRegisteredAgain, s.catalogRegisteredAgainTotal);
    lines.push(
      `${named.total} data file(s) that another writer took out of the table since the last compaction (a delete through the table?) are registered again, ` +
        `as the warehouse still holds them: rows deleted through the table are back; delete rows in the warehouse's files instead (README: "Decisions"): ${named.list}`,
    );
  }
  if (s.catalogDroppedRefs?.length) {
    const named = namedSample(s.catalogDroppedRefs, s.catalogDroppedRefsTotal);
    lines.push(
      `the rebuilt table has one snapshot and only main: tags and branches ${named.list} were dropped ` +
        '(commits made only on a branch are not in the table; the old metadata files keep the refs while they are kept)',
    );
  }
  if (s.catalogBucketsGone?.length) {
    const named = namedSample(s.catalogBucketsGone, s.catalogBucketsGoneTotal);
    lines.push(
      `${named.total} bucket(s) the table listed are no longer in the warehouse (deleted outside this tool?), so their ${s.catalogRowsGone ?? 0} row(s) left the table: ` +
        named.list,
    );
  }
  // Not exit 3: the rows are in the table, but a query filtering on the partition's columns misses them.
  fileLines(
    lines,
    s.partitionMismatchFiles,
    s.partitionMismatchFilesTotal,
    'rows outside the partition of their path (registered; filters on grid_partition or datetime skip them)',
    'files with rows outside the partition of their path',
  );
  fileLines(lines, s.droppedRegistrations, s.droppedRegistrationsTotal, 'no longer registered', 'files no longer registered');
  if (s.filesRewritten) lines.push(`${s.filesRewritten} input file(s) were rewritten after they were read and were left for the next run`);
  for (const f of s.failedBuckets) lines.push(`failed ${f.bucket}: [${f.type}] ${f.reason}`);
  fileLines(lines, s.unreadableFiles, s.unreadableFilesTotal, 'unreadable (not registered)', 'unreadable files');
  if (s.failedBucketsTotal > s.failedBuckets.length) lines.push(`… and ${s.failedBucketsTotal - s.failedBuckets.length} more failed buckets`);
  return lines.join('\n');
}

/** A line per file of a capped list (`label key: reason`), then one counting the files the list left out. */
function fileLines(lines: string[], files: readonly UnreadableFile[] | undefined, total: number | undefined, label: string, rest: string): void {
  for (const f of files ?? []) lines.push(`${label} ${f.key}: ${f.reason}`);
  const left = (total ?? 0) - (files?.length ?? 0);
  if (left > 0) lines.push(`… and ${left} more ${rest}`);
}

/** A capped list of names (buckets, keys) as one phrase (`a, b … and 3 more`), with how many there are in all. */
function namedSample(names: readonly string[], total: number | undefined): { total: number; list: string } {
  const all = total ?? names.length;
  return { total: all, list: `${names.join(', ')}${all > names.length ? ` … and ${all - names.length} more` : ''}` };
}
