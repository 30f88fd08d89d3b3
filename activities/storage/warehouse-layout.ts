/**
 * The hive layout: which keys are data files, which are compaction artifacts, and what they are named.
 * Everything that does not match is never touched and never registered.
 */
import type { BucketRef, BucketSelection } from '../../workflows/contract';
import { bucketPrefix, CELL_FOLDER, hasGlobCharacter } from '../../workflows/contract';

/** Control objects of this tool (plans, lock object) live here; no data file can match it. */
export const CONTROL_PREFIX = '_earthcatalog_compaction';

// A year is four digits without a leading zero: `year=0999` would be read as 999 and its bucket's own
// prefix (`year=999`) would never list the file again.
const DATA_FILE = new RegExp(`^${CELL_FOLDER}([^/=]+)/year=([1-9]\\d{3})/([^/]+\\.parquet)$`);
/** What DuckDB expands in a path it reads (`read_parquet`): such a key would read another file, or none. */
const TEMP_ARTIFACT = /^\.earthcatalog-tmp-[A-Za-z0-9_-]+\.parquet\.[A-Za-z0-9_-]+$/;

export interface DataFileKey {
  bucket: BucketRef;
  name: string;
}

/** Parses a key as a data file of the layout, or returns undefined. Names starting with '.' or '_' are hidden. */
export function parseDataFileKey(key: string): DataFileKey | undefined {
  const m = DATA_FILE.exec(key);
  if (!m) return undefined;
  const name = m[3]!;
  if (name.startsWith('.') || name.startsWith('_')) return undefined;
  return { bucket: { cell: m[1]!, year: Number(m[2]) }, name };
}

/**
 * A key the layout does not take whose name still says Parquet (`.PARQUET`, `.parq`, a part file in a
 * subfolder or under `year=20x6`): likely data delivered to the wrong place, whose rows reach no table.
 * Hidden names (a segment starting with `.` or `_`, as Spark's `_temporary/` while it writes) are not.
 */
export function looksLikeParquet(key: string): boolean {
  return /\.(parquet|parq|pq)$/i.test(key) && !key.split('/').some((segment) => segment.startsWith('.') || segment.startsWith('_'));
}

/** Whether a key is under a cell folder (`grid_partition=…/`), the only place this tool looks for data. */
export function inCellFolder(key: string): boolean {
  return key.startsWith(CELL_FOLDER);
}

/**
 * The grid_partition value a bucket folder's cell stands for: Hive writers (Spark, Hive, pyarrow) escape
 * characters such as / : = # % of a partition value as %XX in its folder name, and Hive readers decode
 * them, so the folder `grid_partition=h3%3A8a2a` holds the cell `h3:8a2a`. A name that is no valid
 * escape (`%zz`) is taken as it is, as pyarrow does. The folder name stays the bucket's identity in keys.
 */
export function cellValueOf(folderCell: string): string {
  if (!folderCell.includes('%')) return folderCell;
  try {
    return decodeURIComponent(folderCell);
  } catch {
    return folderCell;
  }
}

/**
 * Whether the key's file can be compacted: read by DuckDB by its path, and deleted afterwards. A cell
 * `a[1]` is read as the glob `a1`: the bucket would fail for a healthy file, or, were there a cell `a1`
 * with the same file name, compact that file's rows in its place. A control character cannot be carried
 * by the XML of S3's DeleteObjects: the inputs would stay beside the published output, and every run
 * would add one more copy of the bucket's rows. Such keys are never compacted; the rebuild registers
 * them (read by exact path there) unless readers could not open them either.
 */
export function isCompactableKey(key: string): boolean {
  return !hasGlobCharacter(key) && !/[\u0000-\u001f\u007f\ufffe\uffff]/.test(key);
}

/** The prefixes whose listing covers `sel`: one per selected cell (a cell's files only), else the whole warehouse. */
export function selectionPrefixes(sel: BucketSelection): string[] {
  return sel.cells ? [...new Set(sel.cells)].sort().map((c) => `${CELL_FOLDER}${c}/`) : [''];
}

/** Whether a bucket is in `sel`; built once per listing, as it is asked for every object. */
export function selectionFilter(sel: BucketSelection): (b: BucketRef) => boolean {
  const cells = sel.cells && new Set(sel.cells);
  const years = sel.years && new Set(sel.years);
  return (b) => (!cells || cells.has(b.cell)) && (!years || years.has(b.year));
}

export function bucketKey(b: BucketRef): string {
  return bucketPrefix(b);
}

/** The output of one plan for one bucket: the bucket is in the path, the plan in the name. */
export function outputKeyFor(b: BucketRef, planId: string): string {
  return `${bucketPrefix(b)}/compacted_${planId}.parquet`;
}

/** A file name outputKeyFor makes: an earlier compaction's output. */
export function isOutputName(name: string): boolean {
  return /^compacted_[A-Za-z0-9_-]+\.parquet$/.test(name);
}

/** A warehouse key whose file name isOutputName. */
export function isOutputKey(key: string): boolean {
  return isOutputName(key.slice(key.lastIndexOf('/') + 1));
}

/** Name of a temporary file a writer may leave behind in the bucket directory. */
export function tempNameFor(planId: string, tag: string): string {
  return `.earthcatalog-tmp-${planId}.parquet.${tag}`;
}

/** True for temporary artifacts of any compaction (safe to sweep under the warehouse lock). */
export function isTempArtifactName(name: string): boolean {
  return TEMP_ARTIFACT.test(name);
}

/** Rejects keys that could escape the warehouse root. */
export function assertSafeKey(key: string): void {
  if (!isSafeKey(key)) throw new Error(`key escapes the warehouse root: ${JSON.stringify(key)}`);
}

/**
 * Locations no reader opens as written: pyiceberg and Java's S3URI cut an s3:// location at '?' or '#',
 * and Python's URL parsing drops tabs and line breaks from any location.
 */
const UNOPENABLE = [
  { pattern: /^s3:\/\/.*[?#]/, reason: 'its key has ? or #, which Iceberg readers take for the end of an s3:// path' },
  { pattern: /[\t\r\n]/, reason: 'its key has a tab or line break, which pyiceberg drops from a location (it would open another path)' },
];

/** Why the rebuild does not register a data file at this location (store.uri of its key), or undefined. */
export function unopenableLocation(uri: string): string | undefined {
  return UNOPENABLE.find((u) => u.pattern.test(uri))?.reason;
}

/** Why a data file whose key is not isSafeKey is left out of the table (what the rebuild and verify say of it). */
export const UNADDRESSABLE_KEY_REASON =
  'its key has a backslash or a . or .. segment, which this tool does not address (a path on disk and an S3 key would name different objects)';

/** Whether a key stays inside the warehouse root (assertSafeKey does not throw for it). */
export function isSafeKey(key: string): boolean {
  return !(key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.') || key.includes('\\') || key.includes('\0'));
}
