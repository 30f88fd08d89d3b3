/**
 * The checks that read Parquet, in DuckDB: footers (row counts, `geo` key, columns), duplicate ids per
 * bucket, the sort order of compacted files and the catalog's column bounds against the values. Each
 * check runs as one query over all files; when that query fails (a damaged file) it is repeated per
 * bucket and per file, so the report names the culprit.
 */
import type { DuckSession } from '../compaction/duckdb-session';
import { sqlIdent, sqlString, sqlStringList } from '../compaction/duckdb-session';
import { firstLine, firstLineAbout } from '../error-text';
import { listSome } from '../compaction/bucket-errors';
import { boundHolds, decodeBound, instantText, timestampAsDate, type ActualValue } from '../catalog/column-metrics';
import type { ColumnStats } from '../catalog/describe-table';
import type { IcebergSchema } from '../catalog/iceberg-schema';
import { cellValueOf, parseDataFileKey } from '../storage/warehouse-layout';
import { ViolationKinds, type Violation } from './report';

/** A data file available as a local path (materialized). */
export interface LocalDataFile {
  key: string;
  path: string;
  bucket: string;
  compacted: boolean;
}

export interface FooterFacts {
  rows: number;
  geoKeys: number;
  /** The value of the first `geo` key, if any. */
  geo?: Uint8Array;
  /** The file's top-level columns (a field nested in a struct, list or map is none of them). */
  columns: Set<string>;
  /**
   * The Parquet type of a `datetime` column that holds no time (a string, a number), when no column of
   * that name in the file does: year(datetime) has no value for its rows.
   */
  untimedDatetime?: string;
}

export interface FooterResult {
  facts: Map<string, FooterFacts>;
  violations: Violation[];
}

// Columns matched by name (the files of a bucket may differ), never a hive layout (the files carry grid_partition).
const READ_ALL = 'union_by_name = true, hive_partitioning = false';
// The file's path under a name of our own: a data column called `filename` is common enough in STAC
// properties, and DuckDB refuses `filename = true` beside one.
const READ = `${READ_ALL}, filename = '__ec_file'`;

function unreadable(file: LocalDataFile, err: unknown): Violation {
  return { kind: ViolationKinds.unreadableFile, object: file.key, detail: `cannot read the Parquet file: ${firstLineAbout(err, file)}` };
}

async function footerFacts(session: DuckSession, files: readonly LocalDataFile[]): Promise<Map<string, FooterFacts>> {
  const list = sqlStringList(files.map((f) => f.path));
  const byPath = new Map<string, FooterFacts>();
  for (const r of await session.rows(`SELECT file_name, num_rows FROM parquet_file_metadata(${list})`)) {
    byPath.set(String(r.file_name), { rows: Number(r.num_rows), geoKeys: 0, columns: new Set() });
  }
  for (const r of await session.rows(`SELECT file_name, value FROM parquet_kv_metadata(${list}) WHERE key = 'geo'::BLOB`)) {
    const facts = byPath.get(String(r.file_name));
    if (!facts) continue;
    facts.geoKeys += 1;
    if (!facts.geo && r.value instanceof Uint8Array) facts.geo = r.value;
  }
  const timed = new Set<string>();
  // parquet_schema lists a file's nodes depth first, its root first: per file, the children each open
  // group still has to list. A node listed while only the root is open is a column.
  const open = new Map<string, number[]>();
  for (const r of await session.rows(`SELECT file_name, name, type, converted_type, logical_type, num_children FROM parquet_schema(${list})`)) {
    const facts = byPath.get(String(r.file_name));
    if (!facts) continue;
    const children = Number(r.num_children ?? 0);
    const groups = open.get(String(r.file_name));
    if (!groups) {
      open.set(String(r.file_name), [children]);
      continue;
    }
    const column = groups.length === 1;
    groups[groups.length - 1]! -= 1;
    if (children > 0) groups.push(children);
    while (groups.length > 1 && groups[groups.length - 1] === 0) groups.pop();
    if (!column) continue;
    facts.columns.add(String(r.name));
    if (r.name !== 'datetime') continue;
    const time = r.type === 'INT96' || /^(TIMESTAMP|DATE)/.test(String(r.converted_type)) || /^(Timestamp|Date)/.test(String(r.logical_type));
    if (time) timed.add(String(r.file_name));
    else facts.untimedDatetime ??= [r.type, r.converted_type].filter((t) => t !== null && t !== undefined).join(' ') || 'a group';
  }
  for (const file of timed) delete byPath.get(file)!.untimedDatetime;
  const out = new Map<string, FooterFacts>();
  for (const f of files) {
    const facts = byPath.get(f.path);
    if (!facts) throw new Error(`DuckDB returned no footer for ${f.path}`);
    out.set(f.key, facts);
  }
  return out;
}

/** Footers of all files; an unreadable file becomes a violation and is left out of `facts`. */
export async function readFooters(session: DuckSession, files: readonly LocalDataFile[]): Promise<FooterResult> {
  if (files.length === 0) return { facts: new Map(), violations: [] };
  try {
    return { facts: await footerFacts(session, files), violations: [] };
  } catch {
    const facts = new Map<string, FooterFacts>();
    const violations: Violation[] = [];
    for (const f of files) {
      try {
        facts.set(f.key, (await footerFacts(session, [f])).get(f.key)!);
      } catch (err) {
        violations.push(unreadable(f, err));
      }
    }
    return { facts, violations };
  }
}

/** `geo` present exactly once and a JSON object. */
export function checkGeoMetadata(file: LocalDataFile, facts: FooterFacts): Violation | undefined {
  if (facts.geoKeys !== 1) {
    return {
      kind: ViolationKinds.geoMetadata,
      object: file.key,
      detail: facts.geoKeys === 0 ? 'the file has no `geo` key-value metadata' : `the file has ${facts.geoKeys} \`geo\` keys; GeoParquet needs exactly one`,
    };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(facts.geo ?? new Uint8Array()).toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { kind: ViolationKinds.geoMetadata, object: file.key, detail: 'the `geo` value is not a JSON object' };
  }
  const problem = geoMetadataProblem(parsed as Record<string, unknown>, facts.columns);
  return problem ? { kind: ViolationKinds.geoMetadata, object: file.key, detail: `the \`geo\` value ${problem}` } : undefined;
}

/** What GeoParquet's required fields lack (readers find the geometry through them), or undefined. */
function geoMetadataProblem(geo: Record<string, unknown>, columns: ReadonlySet<string>): string | undefined {
  if (typeof geo.version !== 'string') return 'has no `version`';
  if (typeof geo.primary_column !== 'string') return 'has no `primary_column`';
  const described = geo.columns;
  if (typeof described !== 'object' || described === null || Array.isArray(described)) return 'has no `columns` object';
  if (!(geo.primary_column in described)) return `does not describe its primary column '${geo.primary_column}' in \`columns\``;
  if (!columns.has(geo.primary_column)) return `names the primary column '${geo.primary_column}', which the file does not have`;
  return undefined;
}

async function loadFileTable(session: DuckSession, files: readonly LocalDataFile[]): Promise<void> {
  await session.exec('CREATE OR REPLACE TEMP TABLE verify_files (path VARCHAR, bucket VARCHAR)');
  const app = await session.conn.createAppender('verify_files');
  try {
    for (const f of files) {
      app.appendVarchar(f.path);
      app.appendVarchar(f.bucket);
      app.endRow();
    }
    app.flushSync();
  } finally {
    app.closeSync();
  }
}

interface DuplicateRow {
  bucket: string;
  ids: number;
  extraRows: number;
  example: string;
  exampleCount: number;
  /** Warehouse keys of the files that hold the example id. */
  exampleFiles: string[];
}

async function duplicateQuery(session: DuckSession, files: readonly LocalDataFile[]): Promise<DuplicateRow[]> {
  await loadFileTable(session, files);
  const rows = await session.rows(`
    WITH d AS (
      SELECT f.bucket, r.id, count(*) AS n, list(DISTINCT r.__ec_file ORDER BY r.__ec_file) AS files
      FROM read_parquet(${sqlStringList(files.map((f) => f.path))}, ${READ}) r
      JOIN verify_files f ON f.path = r.__ec_file
      WHERE r.id IS NOT NULL
      GROUP BY f.bucket, r.id
      HAVING count(*) > 1
    )
    SELECT bucket, count(*) AS ids, sum(n) - count(*) AS extra_rows,
           arg_min(id, id) AS example, arg_min(n, id) AS example_n, arg_min(files, id) AS example_files
    FROM d GROUP BY bucket ORDER BY bucket`);
  const keyOf = new Map(files.map((f) => [f.path, f.key]));
  return rows.map((r) => ({
    bucket: String(r.bucket),
    ids: Number(r.ids),
    extraRows: Number(r.extra_rows),
    example: String(r.example),
    exampleCount: Number(r.example_n),
    exampleFiles: (Array.isArray(r.example_files) ? r.example_files : []).map((p) => keyOf.get(String(p)) ?? String(p)),
  }));
}

function duplicateViolation(d: DuplicateRow): Violation {
  const name = (key: string) => key.slice(key.lastIndexOf('/') + 1);
  const where = d.exampleFiles.length > 1 ? `in ${d.exampleFiles.length} files (${listSome(d.exampleFiles.map(name), 3)})` : `in one file (${name(d.exampleFiles[0] ?? '?')})`;
  return {
    kind: ViolationKinds.duplicateId,
    object: d.bucket,
    detail: `${d.ids} id(s) occur more than once in the bucket (${d.extraRows} surplus rows), e.g. ${JSON.stringify(d.example)} ${d.exampleCount} times ${where}`,
  };
}

/** The files of `files` that cannot be read on their own. */
async function findUnreadable(session: DuckSession, files: readonly LocalDataFile[], columns: string): Promise<Violation[]> {
  const out: Violation[] = [];
  for (const f of files) {
    try {
      await session.rows(`SELECT count(${columns}) FROM read_parquet(${sqlString(f.path)}, hive_partitioning = false)`);
    } catch (err) {
      out.push(unreadable(f, err));
    }
  }
  return out;
}

/** One row per id per bucket, counted across all files of the bucket. `files` must all have an `id` column. */
export async function checkDuplicateIds(session: DuckSession, files: readonly LocalDataFile[], byBucket: Map<string, LocalDataFile[]>): Promise<Violation[]> {
  if (files.length === 0) return [];
  try {
    return (await duplicateQuery(session, files)).map(duplicateViolation);
  } catch {
    const violations: Violation[] = [];
    for (const [bucket, group] of byBucket) {
      try {
        violations.push(...(await duplicateQuery(session, group)).map(duplicateViolation));
      } catch (err) {
        const bad = await findUnreadable(session, group, 'id');
        violations.push(
          ...(bad.length
            ? bad
            : [{ kind: ViolationKinds.incompatibleBucket, object: bucket, detail: `the files of the bucket cannot be read together: ${firstLine(err)}` }]),
        );
      }
    }
    return violations;
  }
}

/** Rows whose `id` is null, per file. `files` must all have an `id` column. */
export async function checkNullIds(session: DuckSession, files: readonly LocalDataFile[]): Promise<Violation[]> {
  if (files.length === 0) return [];
  return eachFileOnFailure(files, async (some) => {
    const keyOf = new Map(some.map((f) => [f.path, f.key]));
    const rows = await session.rows(
      `SELECT __ec_file, count(*) FILTER (WHERE id IS NULL) AS nulls, count(*) AS n FROM read_parquet(${sqlStringList(some.map((f) => f.path))}, ${READ})
       GROUP BY __ec_file HAVING count(*) FILTER (WHERE id IS NULL) > 0 ORDER BY __ec_file`,
    );
    return rows.map((r) => ({
      kind: ViolationKinds.nullId,
      object: keyOf.get(String(r.__ec_file)) ?? String(r.__ec_file),
      detail: `${Number(r.nulls)} of ${Number(r.n)} rows have no id: they cannot be deduplicated, so a compaction refuses the bucket`,
    }));
  });
}

async function sortQuery(session: DuckSession, files: readonly LocalDataFile[], withPlatform: boolean, withDatetime: boolean): Promise<Violation[]> {
  const order = [withPlatform ? 'platform' : undefined, withDatetime ? 'datetime' : undefined].filter(Boolean).join(', ');
  // A file is sorted iff ordering it by (platform, datetime) — ties kept in file order — leaves every row
  // where it is. DuckDB's default ordering (ASC, NULLS LAST) is the one the compaction writes with.
  const rows = await session.rows(`
    SELECT __ec_file, count(*) AS total,
           count(*) FILTER (WHERE rn - 1 <> file_row_number) AS misplaced,
           min(file_row_number) FILTER (WHERE rn - 1 <> file_row_number) AS first_row
    FROM (
      SELECT __ec_file, file_row_number,
             row_number() OVER (PARTITION BY __ec_file ORDER BY ${order}, file_row_number) AS rn
      FROM read_parquet(${sqlStringList(files.map((f) => f.path))}, ${READ}, file_row_number = true)
    )
    GROUP BY __ec_file HAVING misplaced > 0`);
  const byPath = new Map(files.map((f) => [f.path, f]));
  return rows.map((r) => ({
    kind: ViolationKinds.unsorted,
    object: byPath.get(String(r.__ec_file))?.key ?? String(r.__ec_file),
    detail: `${Number(r.misplaced)} of ${Number(r.total)} rows are out of (platform, datetime) order, the first at row ${Number(r.first_row)}`,
  }));
}

/** Sort order (platform, datetime) of compacted files; columns missing from a file are left out of its key. */
export async function checkSortOrder(session: DuckSession, files: readonly LocalDataFile[], facts: ReadonlyMap<string, FooterFacts>): Promise<Violation[]> {
  const groups = new Map<string, { platform: boolean; datetime: boolean; files: LocalDataFile[] }>();
  for (const f of files) {
    const cols = facts.get(f.key)?.columns;
    if (!cols) continue;
    const platform = cols.has('platform');
    const datetime = cols.has('datetime');
    if (!platform && !datetime) continue;
    const id = `${platform}/${datetime}`;
    const g = groups.get(id) ?? { platform, datetime, files: [] };
    g.files.push(f);
    groups.set(id, g);
  }
  const violations: Violation[] = [];
  for (const g of groups.values()) violations.push(...(await eachFileOnFailure(g.files, (some) => sortQuery(session, some, g.platform, g.datetime))));
  return violations;
}

/** `query` over all `files` at once; when that fails (a damaged file), over each file alone, naming those it cannot read. */
async function eachFileOnFailure(files: readonly LocalDataFile[], query: (some: readonly LocalDataFile[]) => Promise<Violation[]>): Promise<Violation[]> {
  try {
    return await query(files);
  } catch {
    const violations: Violation[] = [];
    for (const f of files) {
      try {
        violations.push(...(await query([f])));
      } catch (err) {
        violations.push(unreadable(f, err));
      }
    }
    return violations;
  }
}

/**
 * The files of `files` whose values do not all decode. A footer and the few columns the other checks
 * read can be whole while another column's pages are damaged, and every reader of the table fails on
 * that file. Every value is hashed, so each page of each column is decompressed and decoded; a filter
 * instead would let DuckDB skip the pages of rows an earlier column already ruled out.
 */
export async function findUndecodable(session: DuckSession, files: readonly LocalDataFile[]): Promise<Violation[]> {
  if (files.length === 0) return [];
  return eachFileOnFailure(files, async (some) => {
    await session.rows(`SELECT bit_xor(hash(COLUMNS(*))) FROM read_parquet(${sqlStringList(some.map((f) => f.path))}, ${READ_ALL})`);
    return [];
  });
}

async function partitionQuery(session: DuckSession, files: readonly LocalDataFile[], withCell: boolean): Promise<Violation[]> {
  const cell = withCell ? ', count(grid_partition) AS celled, min(grid_partition)::VARCHAR AS c_lo, max(grid_partition)::VARCHAR AS c_hi' : '';
  // The session's time zone is UTC, so year() of a timestamptz is its UTC year, as Iceberg's year transform.
  const rows = await session.rows(
    `SELECT __ec_file, count(*) AS n, count(datetime) AS dated, count(*) FILTER (NOT isfinite(datetime)) AS infinite, min(year(datetime)) AS y_lo, max(year(datetime)) AS y_hi,
            min(datetime)::VARCHAR AS dt_lo, max(datetime)::VARCHAR AS dt_hi${cell}
     FROM read_parquet(${sqlStringList(files.map((f) => f.path))}, ${READ}) GROUP BY __ec_file`,
  );
  const byPath = new Map(files.map((f) => [f.path, f]));
  const violations: Violation[] = [];
  for (const r of rows) {
    const file = byPath.get(String(r.__ec_file));
    const bucket = file && parseDataFileKey(file.key)?.bucket;
    if (!file || !bucket) continue;
    const n = Number(r.n);
    const wrong: string[] = [];
    const undated = n - Number(r.dated);
    if (undated > 0) wrong.push(`${undated} of ${n} rows have no datetime`);
    // year() of infinity is NULL, so min/max below do not see it.
    if (Number(r.infinite) > 0) wrong.push(`${Number(r.infinite)} of ${n} rows have an infinite datetime`);
    if (Number(r.dated) > 0 && (Number(r.y_lo) !== bucket.year || Number(r.y_hi) !== bucket.year)) {
      wrong.push(`its datetimes run from ${String(r.dt_lo)} to ${String(r.dt_hi)}, not all in ${bucket.year}`);
    }
    const cell = cellValueOf(bucket.cell);
    if (withCell && (Number(r.celled) !== n || r.c_lo !== cell || r.c_hi !== cell)) {
      const others = Number(r.celled) < n ? `${n - Number(r.celled)} rows without one` : `values from ${JSON.stringify(r.c_lo)} to ${JSON.stringify(r.c_hi)}`;
      wrong.push(`its grid_partition column is not ${JSON.stringify(cell)} throughout (${others})`);
    }
    if (wrong.length) {
      violations.push({
        kind: ViolationKinds.partitionMismatch,
        object: file.key,
        detail: `the rows do not match the partition of their path (grid_partition=${bucket.cell}, year(datetime)=${bucket.year}): ${wrong.join('; ')}; engines that prune on the partition skip them`,
      });
    }
  }
  return violations;
}

/**
 * Each file's rows against the partition its path gives it, which is the one the catalog registers:
 * a row whose `datetime` is null or in another UTC year, or whose `grid_partition` names another cell,
 * is skipped by every engine that prunes partitions for a filter on those columns. A file without a
 * `grid_partition` column is read with the partition's value, which is right by construction.
 */
export async function checkPartitionValues(session: DuckSession, files: readonly LocalDataFile[], facts: ReadonlyMap<string, FooterFacts>): Promise<Violation[]> {
  const violations: Violation[] = [];
  const groups = new Map<boolean, LocalDataFile[]>();
  for (const f of files) {
    const cols = facts.get(f.key)?.columns;
    if (!cols) continue;
    if (!cols.has('datetime')) {
      violations.push({
        kind: ViolationKinds.partitionMismatch,
        object: f.key,
        detail: `the file has no datetime column, so its rows have no year, but its path puts them in year(datetime)=${parseDataFileKey(f.key)?.bucket.year}; engines that prune on the partition skip them`,
      });
      continue;
    }
    const untimed = facts.get(f.key)?.untimedDatetime;
    if (untimed) {
      // DuckDB would refuse year() of it, which reads as a damaged file; the file is whole, its column is not a time.
      violations.push({
        kind: ViolationKinds.partitionMismatch,
        object: f.key,
        detail: `the file's datetime column is ${untimed}, not a timestamp, so its rows have no year, but its path puts them in year(datetime)=${parseDataFileKey(f.key)?.bucket.year}; engines that prune on the partition skip them`,
      });
      continue;
    }
    const withCell = cols.has('grid_partition');
    groups.set(withCell, [...(groups.get(withCell) ?? []), f]);
  }
  for (const [withCell, group] of groups) violations.push(...(await eachFileOnFailure(group, (some) => partitionQuery(session, some, withCell))));
  return violations;
}

/** The columns queries filter on (the contract's named columns); the wide JSON columns are not read. */
const BOUNDED_COLUMNS = ['id', 'platform', 'datetime', 'updated'];

/** A column's min and max as comparable to its Iceberg bounds: micros for timestamps, text for strings. */
function minMaxSql(column: string, type: string): [string, string] | undefined {
  const c = sqlIdent(column);
  if (type === 'timestamptz' || type === 'timestamp') return [`epoch_us(min(${c}))`, `epoch_us(max(${c}))`];
  if (type === 'string') return [`min(${c})::VARCHAR`, `max(${c})::VARCHAR`];
  if (type === 'long' || type === 'int' || type === 'date') return [`min(${c})::BIGINT`, `max(${c})::BIGINT`];
  return undefined;
}

function shown(type: string, v: ActualValue | Buffer | undefined): string {
  if (Buffer.isBuffer(v)) return shown(type, decodeBound(type, v));
  if (typeof v === 'bigint' && type.startsWith('timestamp')) return instantText(timestampAsDate(v, 'MICROS'));
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

type MetricsColumn = { name: string; id: number; type: string; sql: [string, string] };

async function metricsQuery(
  session: DuckSession,
  files: readonly LocalDataFile[],
  columns: readonly MetricsColumn[],
  statsOf: (key: string) => ColumnStats | undefined,
): Promise<Violation[]> {
  const select = columns.map((c, i) => `${c.sql[0]} AS lo${i}, ${c.sql[1]} AS hi${i}, count(${sqlIdent(c.name)}) AS v${i}`).join(', ');
  const rows = await session.rows(
    `SELECT __ec_file, count(*) AS n, ${select} FROM read_parquet(${sqlStringList(files.map((f) => f.path))}, ${READ}) GROUP BY __ec_file`,
  );
  const byPath = new Map(files.map((f) => [f.path, f]));
  const violations: Violation[] = [];
  for (const r of rows) {
    const file = byPath.get(String(r.__ec_file));
    const stats = file && statsOf(file.key);
    if (!file || !stats) continue;
    const wrongBounds: string[] = [];
    const wrongCounts: string[] = [];
    const n = BigInt(r.n as bigint | number);
    columns.forEach((c, i) => {
      const { lower, upper, values, nulls } = stats.get(c.id) ?? {};
      const lo = r[`lo${i}`] as ActualValue | null;
      const hi = r[`hi${i}`] as ActualValue | null;
      if (lower && lo !== null && boundHolds(c.type, 'lower', lower, lo) === false) {
        wrongBounds.push(`${c.name} lower bound ${shown(c.type, lower)} is above the smallest value ${shown(c.type, lo)}`);
      }
      if (upper && hi !== null && boundHolds(c.type, 'upper', upper, hi) === false) {
        wrongBounds.push(`${c.name} upper bound ${shown(c.type, upper)} is below the largest value ${shown(c.type, hi)}`);
      }
      const actualNulls = n - BigInt(r[`v${i}`] as bigint | number);
      if (nulls !== undefined && nulls !== actualNulls) wrongCounts.push(`${c.name} has ${actualNulls} null(s), the catalog records ${nulls}`);
      if (values !== undefined && values !== n) wrongCounts.push(`${c.name} has ${n} value(s) (nulls included), the catalog records ${values}`);
    });
    if (wrongBounds.length) {
      violations.push({
        kind: ViolationKinds.columnBoundsMismatch,
        object: file.key,
        detail: `the catalog's column bounds would hide rows of this file from filtered queries: ${wrongBounds.join('; ')}`,
      });
    }
    if (wrongCounts.length) {
      violations.push({
        kind: ViolationKinds.columnCountsMismatch,
        object: file.key,
        // A null count of 0 lets engines skip the file for `IS NULL`; one equal to the value count, for every other filter.
        detail: `the catalog's column counts are not the file's, so engines may skip its rows for null checks or filters: ${wrongCounts.join('; ')}`,
      });
    }
  }
  return violations;
}

/**
 * The catalog's metrics of the filtered-on columns against each file's values: a lower/upper bound that
 * is too narrow, or a null or value count that is not the file's, makes engines skip the file for
 * queries whose rows it holds.
 */
export async function checkColumnMetrics(
  session: DuckSession,
  files: readonly LocalDataFile[],
  facts: ReadonlyMap<string, FooterFacts>,
  schema: IcebergSchema,
  statsOf: (key: string) => ColumnStats | undefined,
): Promise<Violation[]> {
  const bounded = files.filter((f) => statsOf(f.key) && facts.has(f.key));
  const present = (name: string) => bounded.some((f) => facts.get(f.key)!.columns.has(name));
  const columns = schema.fields.flatMap(({ name, id, type }) => {
    if (typeof type !== 'string' || !BOUNDED_COLUMNS.includes(name) || !present(name)) return [];
    const sql = minMaxSql(name, type);
    return sql ? [{ name, id, type, sql }] : [];
  });
  if (!bounded.length || !columns.length) return [];
  try {
    return await metricsQuery(session, bounded, columns, statsOf);
  } catch {
    // A file whose columns do not read as the table's types: the other checks report it.
    const violations: Violation[] = [];
    for (const f of bounded) {
      const own = columns.filter((c) => facts.get(f.key)!.columns.has(c.name));
      if (own.length) violations.push(...(await metricsQuery(session, [f], own, statsOf).catch(() => [])));
    }
    return violations;
  }
}
