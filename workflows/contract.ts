/**
 * The types that cross the workflow/activity boundary and the workflow input schema.
 * Pure and deterministic: imported by workflow code (inside the sandbox), by activities and by clients.
 */
import { z } from 'zod';

export const DEFAULT_TASK_QUEUE = 'earthcatalog-compaction';
/** The compaction workflow's type: the name of its function in workflows/index.ts. */
export const COMPACTION_WORKFLOW_TYPE = 'compactWarehouse';

/**
 * The task queue of a run's bucket activities, beside the queue its workflow runs on. A worker polls it
 * only with as many slots as the buckets its memory holds, so a bucket the worker cannot run yet stays
 * in the server's queue, where any other worker can take it.
 */
export function bucketTaskQueue(taskQueue: string): string {
  return `${taskQueue}-buckets`;
}
export const DEFAULT_NAMESPACE = 'earthcatalog';
export const DEFAULT_TABLE = 'stac_items';
export const DEFAULT_MAX_PARALLEL_BUCKETS = 4;
export const DEFAULT_CATALOG_NAME = 'earthcatalog';

/**
 * The plan, every bucket and the catalog rebuild heartbeat this often from a timer (their workers send
 * every one), and are retried elsewhere after three intervals without one: a dead worker costs 30 s.
 */
export const HEARTBEAT_INTERVAL_MS = 10_000;
export const HEARTBEAT_TIMEOUT_MS = 3 * HEARTBEAT_INTERVAL_MS;

/** Non-retryable failure types; the workflow reports them per bucket instead of retrying. */
export const FailureTypes = {
  invalidInput: 'InvalidInput',
  badBucketData: 'BadBucketData',
  missingInput: 'MissingPlannedInput',
  storageDenied: 'StorageAccessDenied',
  /** Retried by the activity itself a few times (CREDENTIAL_ATTEMPTS), then non-retryable. */
  noCredentials: 'NoCredentials',
  storageMissing: 'StorageNotFound',
  catalogCorrupt: 'CatalogCorrupt',
  warehouseMismatch: 'WarehouseMismatch',
  catalogConflict: 'CatalogConflict',
  lockTimeout: 'LockTimeout',
  /** `--use-lock`: the Python pipeline's lock object is held (retried about 5 minutes, then the run fails with it). */
  pipelineLockHeld: 'PipelineLockHeld',
  /** The run no longer holds the warehouse lock it was granted (a reset past the grant). */
  lockLost: 'LockLost',
  planNotFound: 'PlanNotFound',
  memoryBudget: 'BucketExceedsMemoryBudget',
  /** An input was rewritten or removed while its bucket was compacted (an ingest beside the run): retried. */
  inputsChanged: 'InputsChanged',
  /** A stopped run's attempt published another plan's output in the bucket meanwhile: the bucket is left for the next run. */
  otherPlanOutput: 'OtherPlanOutput',
} as const;

const S3_URI = /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/;
const S3TABLES_ARN = /^arn:aws[a-z-]*:s3tables:[a-z0-9-]+:\d{12}:bucket\/[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;

/** Whether `catalog` names an S3 Tables table bucket (a well-formed ARN or not: its backend says what is wrong with it), which has no catalog name. */
export function isS3TablesCatalog(catalog: string): boolean {
  return /^arn:aws[a-z-]*:s3tables:/.test(catalog);
}

/**
 * Lexically normalizes an absolute POSIX path or an s3:// URI so that one warehouse has one name
 * (the lock key depends on it). No I/O: symlinks are not resolved.
 */
export function normalizeLocation(raw: string): string {
  const value = raw.trim();
  if (value.startsWith('s3://')) {
    const rest = value.slice('s3://'.length);
    const [bucket, ...parts] = rest.split('/');
    const clean = normalizeSegments(parts);
    return clean.length ? `s3://${bucket}/${clean.join('/')}` : `s3://${bucket}`;
  }
  if (value.startsWith('arn:')) return value;
  const clean = normalizeSegments(value.split('/'));
  return '/' + clean.join('/');
}

function normalizeSegments(parts: string[]): string[] {
  const out: string[] = [];
  for (const part of parts) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw new Error(`path escapes its root: ..`);
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}

/** A location that normalizes, or an issue naming it (a path with '..' above its root). */
function normalized(value: string, ctx: z.RefinementCtx): string {
  try {
    return normalizeLocation(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `${(err as Error).message} in ${JSON.stringify(value)}` });
    return z.NEVER;
  }
}

/** DuckDB reads a path with one of these as a glob pattern (`a[1]` matches `a1`), not as that path. */
export function hasGlobCharacter(path: string): boolean {
  return /[*?[\]{}]/.test(path);
}

const warehouseSchema = z
  .string({ error: 'warehouse is required (an absolute path or s3://bucket/prefix)' })
  .min(1, 'warehouse is required (an absolute path or s3://bucket/prefix)')
  .refine((v) => v.startsWith('/') || S3_URI.test(v), {
    message: 'warehouse must be an absolute path or an s3://bucket/prefix URI',
  })
  // Every file below it would be read as a pattern: buckets would fail, or read another path's file.
  .refine((v) => !hasGlobCharacter(v), { message: 'warehouse must not contain * ? [ ] { } (DuckDB reads them as a glob pattern)' })
  .transform(normalized);

const catalogSchema = z
  .string({ error: 'catalog is required (a catalog.db path, s3://.../catalog.db, or an S3 Tables ARN)' })
  .min(1, 'catalog is required (a catalog.db path, s3://.../catalog.db, or an S3 Tables ARN)')
  .refine((v) => v.startsWith('/') || S3_URI.test(v) || S3TABLES_ARN.test(v), {
    message: 'catalog must be an absolute path to catalog.db, s3://bucket/key/catalog.db, or an S3 Tables bucket ARN',
  })
  .transform(normalized);

const pipelineLockSchema = z
  .string()
  .refine((v) => (v.startsWith('/') || S3_URI.test(v)) && !v.endsWith('/'), {
    message: "pipelineLock must be an absolute path or an s3://bucket/key URI of one object (the Python pipeline's store and lock key)",
  })
  .refine((v) => !/[?#\u0000-\u001f\u007f]/.test(v), { message: 'pipelineLock must not contain ? # or control characters' })
  .transform(normalized)
  // Checked as normalized: `s3://bkt/x/..` is the bucket itself, `/tmp/..` the root.
  .refine((v) => /^s3:\/\/[^/]+\/./.test(v) || /^\/[^/]+\/./.test(v), {
    message: 'pipelineLock must name an object inside a bucket or a folder (not the bucket, the filesystem root or a file at the root)',
  })
  // Never a data file's place: the run would delete its lock object as a bucket input, or register it.
  .refine((v) => !/\/grid_partition=|\.parquet$/i.test(v), { message: 'pipelineLock must not be inside a grid_partition= folder or end in .parquet' });

const identifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a simple identifier: letters, digits and underscores, not beginning with a digit');
// A cell as its folder names it (a Hive writer escapes some characters as %XX: warehouse-layout.ts cellValueOf).
// Every folder name a run of the whole warehouse compacts (the layout's `[^/=]+`: `zürich`, `a b`, `x+y`),
// so that any of its buckets can be selected; not one no key of the layout can hold.
const CELL_MESSAGE = "a cell is its folder name after grid_partition=, spelled as the folder is: no '/', '=', '\\' or control characters, and not '.' or '..'";
const cellSchema = z
  .string()
  .regex(/^[^/=\\\u0000-\u001f\u007f]+$/, CELL_MESSAGE)
  .refine((c) => c !== '.' && c !== '..', CELL_MESSAGE);

function fourDigitYear(issue: { input?: unknown }): string {
  return `a year has four digits (1000 to 9999), got ${String(issue.input)}`;
}

/**
 * One line per problem, each led by its field. An unknown field (a misspelling, a snake_case name) is
 * followed by the fields there are, so the right name is on the screen.
 */
function issueLines(error: z.ZodError, fields: readonly string[], whole: string): string[] {
  return error.issues.map((i) => {
    const known = i.code === 'unrecognized_keys' ? ` (the fields are ${fields.join(', ')})` : '';
    return `${i.path.join('.') || whole}: ${i.message}${known}`;
  });
}

/** Which buckets a run compacts or `verify` checks; absent means all. */
const selectionFields = {
  // An empty list would select nothing yet look like a success: almost surely a mistake.
  cells: z.array(cellSchema).min(1, 'list at least one cell, or leave cells out for all').optional(),
  years: z.array(z.number().int().min(1000, { error: fourDigitYear }).max(9999, { error: fourDigitYear })).min(1, 'list at least one year, or leave years out for all').optional(),
};
const bucketSelectionSchema = z.object(selectionFields).strict();
export type BucketSelection = z.output<typeof bucketSelectionSchema>;

/** Parses a selection of buckets; throws an Error whose message lists every problem on one line. */
export function parseBucketSelection(raw: unknown): BucketSelection {
  const result = bucketSelectionSchema.safeParse(raw);
  if (result.success) return result.data;
  throw new Error(`invalid selection: ${issueLines(result.error, Object.keys(selectionFields), 'selection').join('; ')}`);
}

const compactionInputFields = z
  .object({
    warehouse: warehouseSchema,
    catalog: catalogSchema,
    threshold: z.number().int().min(1, 'at least 1 (a bucket with that many data files or more is compacted; 1 takes every bucket)').max(100_000).default(2),
    dryRun: z.boolean().default(false),
    useLock: z.boolean().default(false),
    /** The Python pipeline's lock object `useLock` takes; absent: see pipelineLockLocation. */
    pipelineLock: pipelineLockSchema.optional(),
    maxParallelBuckets: z.number().int().min(1, 'at least 1 (bucket activities in flight)').max(1000).default(DEFAULT_MAX_PARALLEL_BUCKETS),
    ...selectionFields,
    namespace: identifier.default(DEFAULT_NAMESPACE),
    table: identifier.default(DEFAULT_TABLE),
    catalogName: identifier.default(DEFAULT_CATALOG_NAME),
    /** Finish an earlier, interrupted plan instead of planning anew. */
    resumePlanId: z.string().regex(/^[A-Za-z0-9_-]{1,80}$/).optional(),
    /** How long to wait for another compaction of the same warehouse; absent waits indefinitely. */
    lockTimeoutSeconds: z.number().int().min(0, 'at least 0 (0: run now or not at all)').optional(),
  })
  .strict();

export const compactionInputSchema = compactionInputFields
  // A dry run plans anew, so a dry-run resume would show a fresh plan while claiming to preview the old one.
  .refine((v) => !(v.dryRun && v.resumePlanId), {
    path: ['dryRun'],
    message: 'a resume cannot be a dry run (a dry run plans anew, so it would not show what the resume does)',
  })
  .refine((v) => !(v.pipelineLock && !v.useLock), {
    path: ['pipelineLock'],
    message: 'pipelineLock names the object useLock takes: set useLock too',
  })
  // A resume finishes the plan as it was made; a selection given with it would be silently ignored.
  .refine((v) => !(v.resumePlanId && (v.cells || v.years)), {
    path: ['resumePlanId'],
    message: 'a resume finishes its plan as it was made (its cells, years and threshold): leave out cells and years',
  });

export type CompactionInput = z.input<typeof compactionInputSchema>;
export type CompactionRequest = z.output<typeof compactionInputSchema>;

/**
 * The Python pipeline's lock object that `useLock` takes: `pipelineLock`, else where that pipeline
 * keeps it by default when its store is the warehouse's bucket (its S3Lock's key `.lock` at the store's
 * root: `s3://bucket/.lock`), and for a local warehouse `.lock` in its folder.
 */
export function pipelineLockLocation(input: { warehouse: string; pipelineLock?: string | undefined }): string {
  if (input.pipelineLock) return input.pipelineLock;
  if (input.warehouse.startsWith('s3://')) return `s3://${input.warehouse.slice('s3://'.length).split('/')[0]}/.lock`;
  return `${input.warehouse.replace(/\/+$/, '')}/.lock`;
}

/**
 * The lock workflows' ids carry the warehouse and catalog, and Temporal refuses an id over 1,000
 * bytes: a longer path would leave its run waiting for a lock it can never request.
 */
export const MAX_LOCATION_LENGTH = 800;
/** Temporal's limit on a workflow id, in UTF-8 bytes. */
export const MAX_WORKFLOW_ID_BYTES = 1000;

/** `value`'s length in UTF-8 bytes, which Temporal's limits count (é is two, 日 three); no Buffer in workflow code. */
export function utf8Length(value: string): number {
  let bytes = 0;
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
  }
  return bytes;
}

/** The patched() ids the workflow applies newerInputProblems' rules behind, in the order they were added. */
export const InputRulePatches = {
  /** Control characters, lock-id length, the filesystem root. */
  first: 'newer-input-rules',
  /** A query string or fragment in an s3:// catalog. */
  catalogQuery: 'no-query-in-s3-catalog',
  /** A '#' in an s3:// warehouse. */
  warehouseFragment: 'no-fragment-in-s3-warehouse',
  /** A namespace or table name S3 Tables does not allow, with an S3 Tables catalog. */
  s3TablesNames: 's3-tables-names-in-input',
  /** A location within MAX_LOCATION_LENGTH characters but over it in UTF-8 bytes (é, 日本). */
  locationBytes: 'location-length-in-bytes',
} as const;

export interface NewerInputProblem {
  problem: string;
  patch: (typeof InputRulePatches)[keyof typeof InputRulePatches];
}

/**
 * Rules added after runs were already started with inputs that pass the schema alone. The workflow
 * applies each behind its `patched()` id, so a run that replays from before a rule is not refused
 * halfway; the client and new runs apply them always. Returns the problems, none when the input is fine.
 */
export function newerInputProblems(input: CompactionRequest): NewerInputProblem[] {
  const problems: NewerInputProblem[] = [];
  const first = (problem: string) => problems.push({ problem, patch: InputRulePatches.first });
  for (const field of ['warehouse', 'catalog'] as const) {
    const value = input[field];
    // A NUL fails deep in a file API (as a TypeError, retried), and a newline breaks every printed command.
    if (/[\u0000-\u001f\u007f]/.test(value)) first(`${field}: must not contain control characters (a NUL, a newline, a tab)`);
    if (value.length > MAX_LOCATION_LENGTH) first(`${field}: at most ${MAX_LOCATION_LENGTH} characters (it names a lock workflow, whose id Temporal limits), got ${value.length}`);
    // Temporal counts bytes: a path of 428 characters of 日 (1,228 bytes) passed the rule above and its run
    // waited for ever for a lock it could not request.
    else if (utf8Length(value) > MAX_LOCATION_LENGTH) {
      problems.push({
        problem: `${field}: at most ${MAX_LOCATION_LENGTH} bytes in UTF-8 (it names a lock workflow, whose id Temporal limits to ${MAX_WORKFLOW_ID_BYTES} bytes; é takes two, 日 three), got ${utf8Length(value)}`,
        patch: InputRulePatches.locationBytes,
      });
    }
  }
  if (input.warehouse === '/') first('warehouse: the filesystem root is not a warehouse (name the folder that holds the grid_partition=… folders)');
  // A presigned URL's query string is a credential, and the catalog is kept in the run's input, its lock
  // workflow's id, its summary and the plan's files. (The warehouse's `?` is refused as a glob character.)
  if (input.catalog.startsWith('s3://') && /[?#]/.test(input.catalog)) {
    problems.push({
      problem: 'catalog: an s3:// catalog is a plain location, without a query string or fragment (? #): a presigned URL would keep its signature in the run\'s history',
      patch: InputRulePatches.catalogQuery,
    });
  }
  // Iceberg readers cut an s3:// location at '#': the rebuild could register none of the compacted files,
  // and the table would be empty after every bucket had replaced its inputs. A fragment may also be a
  // secret pasted with the URL, kept in the run's history.
  if (input.warehouse.startsWith('s3://') && input.warehouse.includes('#')) {
    problems.push({
      problem: 'warehouse: an s3:// warehouse must not contain # (Iceberg readers take it for the end of an s3:// location, so no file below it could be registered in the table)',
      patch: InputRulePatches.warehouseFragment,
    });
  }
  // Found here, the CLI refuses it as a usage error like any other bad name, before anything starts,
  // instead of the run failing its pre-flight.
  if (S3TABLES_ARN.test(input.catalog)) {
    for (const { field, problem } of s3TablesNameProblems(input, input.catalog)) {
      problems.push({ problem: `${field}: ${problem}`, patch: InputRulePatches.s3TablesNames });
    }
  }
  return problems;
}

/** S3 Tables' rule for namespace and table names (its API answers BadRequestException otherwise). */
const S3TABLES_NAME = /^[a-z0-9]([a-z0-9_]{0,253}[a-z0-9])?$/;

/** Why S3 Tables would refuse the namespace or the table name, saying its rule, namespace first; none when it would not. */
export function s3TablesNameProblems(names: { namespace: string; table: string }, tableBucketArn: string): { field: 'namespace' | 'table'; problem: string }[] {
  const problems: { field: 'namespace' | 'table'; problem: string }[] = [];
  for (const [field, what] of [['namespace', 'namespace'], ['table', 'table name']] as const) {
    const name = names[field];
    if (S3TABLES_NAME.test(name) && !(field === 'namespace' && name.startsWith('aws'))) continue;
    problems.push({
      field,
      problem:
        `${what} ${JSON.stringify(name)} is not allowed in S3 Tables (${tableBucketArn}): 1 to 255 lowercase letters, digits and ` +
        `underscores, beginning and ending with a letter or digit${field === 'namespace' ? ', not beginning with "aws"' : ''}`,
    });
  }
  return problems;
}

/** Every lock workflow's id starts with this (lockWorkflowId). */
export const LOCK_WORKFLOW_ID_PREFIX = 'earthcatalog-lock:';

/**
 * Why a compaction may not run under `workflowId`, if it may not: under a lock's id the run would receive
 * its own lock requests and wait for itself forever.
 */
export function compactionWorkflowIdProblem(workflowId: string): string | undefined {
  if (!workflowId.startsWith(LOCK_WORKFLOW_ID_PREFIX)) return undefined;
  return `the workflow id ${workflowId} is of the form of a lock workflow's (${LOCK_WORKFLOW_ID_PREFIX}…): a compaction under it would wait for itself; start it under another id`;
}

/** Parses a workflow input; throws an Error whose message lists every problem on one line. */
export function parseCompactionInput(raw: unknown, opts: { newerRules?: boolean } = {}): CompactionRequest {
  const result = compactionInputSchema.safeParse(raw);
  const problems = result.success ? [] : issueLines(result.error, Object.keys(compactionInputFields.shape), 'input');
  if (result.success && (opts.newerRules ?? true)) problems.push(...newerInputProblems(result.data).map((p) => p.problem));
  if (result.success && problems.length === 0) return result.data;
  throw invalidInputError(problems);
}

/**
 * The input of a run started under an earlier version whose rules accepted what this version's refuse
 * (an empty years list, say), for the workflow to go on with when it replays such a run: every field
 * this version accepts as parsed (defaults filled in), the others as given.
 */
export function inputAsStarted(raw: unknown): CompactionRequest {
  const given: Record<string, unknown> = typeof raw === 'object' && raw !== null ? { ...raw } : {};
  const input: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(compactionInputFields.shape)) {
    const parsed = field.safeParse(given[name]);
    const value = parsed.success ? parsed.data : given[name];
    if (value !== undefined) input[name] = value;
  }
  return input as CompactionRequest;
}

/** The error an input with `problems` is refused with, wherever it is checked. */
export function invalidInputError(problems: readonly string[]): Error {
  return new Error(`invalid compaction input: ${problems.join('; ')}`);
}

/** One (cell, year) prefix of the hive layout. */
export interface BucketRef {
  cell: string;
  year: number;
}

/** The first folder level of the hive layout, before the cell. */
export const CELL_FOLDER = 'grid_partition=';

export function bucketPrefix(b: BucketRef): string {
  return `${CELL_FOLDER}${b.cell}/year=${b.year}`;
}

/** A data file as listed by the planner. `key` is relative to the warehouse root. */
export interface PlannedFile {
  key: string;
  size: number;
}

/** The durable unit of work: the bucket and exactly the inputs the plan recorded. */
export interface BucketTask {
  bucket: BucketRef;
  inputs: PlannedFile[];
}

export interface PlanRequest {
  warehouse: string;
  planId: string;
  threshold: number;
  dryRun: boolean;
  cells?: string[];
  years?: number[];
  /** The catalog whose table's number types the plan records (tableTypeCasts); absent in requests recorded before. */
  catalog?: CatalogRequest;
}

/** What the plan activity returns: small and fixed-size, whatever the warehouse's size. */
export interface PlanSummary {
  planId: string;
  /** The catalog has no such table yet: the run creates it (CompactionSummary.catalogTableCreated; absent when it has). */
  tableAbsent?: true;
  bucketsScanned: number;
  filesBefore: number;
  bucketsToCompact: number;
  filesToCompact: number;
  bytesToCompact: number;
  pages: number;
  /** The first bucket names of the plan (the largest), for dry runs and the UI. */
  sample: string[];
  /** Objects under bucket prefixes that are not data files, or data files that cannot be compacted (isCompactableKey): left alone, counted for the operator. */
  ignoredObjects: number;
  /** Among them, the keys that look like Parquet data (looksLikeParquet; the first names, and how many); absent when none. */
  ignoredParquetLike?: string[];
  ignoredParquetLikeTotal?: number;
  /** Files of buckets too large for one task, left for a later run (capBucketInputs); absent when none. */
  inputsDeferred?: number;
  /** Buckets below the threshold planned because a file has a column of Parquet's Null type (the first names, and how many); absent when none. */
  nullTypedBuckets?: string[];
  nullTypedBucketsTotal?: number;
  /** Buckets below the threshold planned because a file has a number column the table types otherwise (an integer in a double column, a float in a long one); absent when none. */
  retypedBuckets?: string[];
  retypedBucketsTotal?: number;
}

export interface PlanPageRequest {
  warehouse: string;
  planId: string;
  page: number;
}

export interface BucketRequest extends BucketTask {
  warehouse: string;
  planId: string;
}

export type BucketOutcome = 'compacted' | 'already-compacted';

export interface BucketResult {
  bucket: BucketRef;
  outcome: BucketOutcome;
  outputKey: string;
  filesIn: number;
  rowsIn: number;
  rowsOut: number;
  bytesIn: number;
  bytesOut: number;
  orphansRemoved: number;
  /** Inputs rewritten after they were read: compacted in their earlier version and left in place for the next run. */
  inputsRewritten?: number;
  /**
   * The output was written with the plan's table types (tableTypeCasts): by this attempt, or, found already
   * written, as its provenance records. Absent when a release before the types wrote it or ran the attempt:
   * the next plan reads that output's footer again (lastOutputCheck).
   */
  typedAsTable?: true;
}

export interface BucketFailure {
  bucket: string;
  type: string;
  reason: string;
}

/** Longest failure reason a run keeps (capFailureReason). */
export const MAX_FAILURE_REASON_CHARS = 2000;

/**
 * A bucket's failure reason as the run keeps it. The failures travel in continue-as-new, finishPlan's
 * input and the result, each a payload of at most 2 MB: 200 reasons of this size stay far below it,
 * whatever an error message holds.
 */
export function capFailureReason(reason: string): string {
  const cut = reason.length - MAX_FAILURE_REASON_CHARS;
  return cut <= 0 ? reason : `${reason.slice(0, MAX_FAILURE_REASON_CHARS)}… (${cut} more characters)`;
}

export interface CatalogRequest {
  warehouse: string;
  catalog: string;
  namespace: string;
  table: string;
  catalogName: string;
}

export interface UnreadableFile {
  key: string;
  reason: string;
}

export interface CatalogResult {
  snapshotId: string;
  metadataLocation: string;
  dataFiles: number;
  totalRows: number;
  totalBytes: number;
  unreadable: UnreadableFile[];
  /** All unreadable files, when `unreadable` was capped to keep the result small. */
  unreadableTotal?: number;
  /**
   * Registered files whose rows do not fit the partition of their path (datetime null or in another
   * year): engines that prune on it skip those rows. Capped like `unreadable`.
   */
  partitionMismatches?: UnreadableFile[];
  partitionMismatchesTotal?: number;
  /** The new schema the registered files needed: columns added (dotted paths) and types widened. */
  schemaEvolved?: { schemaId: number; added: string[]; widened: string[] };
  /**
   * Registered files with a column readers cannot read as the table's (another kind of type, a name
   * differing only in case, Parquet's Null type): scans touching them fail in pyiceberg. Capped like `unreadable`.
   */
  schemaMismatches?: UnreadableFile[];
  schemaMismatchesTotal?: number;
  /**
   * Files the replaced table registered that still exist (or cannot be checked) but are no data files of
   * the layout, so the rebuilt table no longer lists their rows (another writer's registrations). Capped like `unreadable`.
   */
  droppedRegistrations?: UnreadableFile[];
  droppedRegistrationsTotal?: number;
  /**
   * Buckets the replaced table listed and the warehouse no longer has a data file in (deleted by hand,
   * say): their rows (`rowsGone`, by the replaced table's counts) left the table. Capped like `unreadable`.
   */
  bucketsGone?: string[];
  bucketsGoneTotal?: number;
  rowsGone?: number;
  /**
   * Data files the last rebuild registered that another writer's commit took out of the table since (a
   * delete through the table), registered again as the warehouse still holds them (capped like `unreadable`).
   */
  registeredAgain?: string[];
  registeredAgainTotal?: number;
  createdTable: boolean;
  /** Manifests, manifest lists (and old metadata files, where the table asks for it) no reader needs any more, deleted after the commit. */
  metadataFilesDeleted?: number;
  /** Why old metadata files were not looked at (gc.enabled=false, a catalog that removes them itself). */
  metadataCleanupNote?: string;
  /** Why old metadata files were not deleted although they could have been. */
  metadataCleanupError?: string;
  /** Tags and branches of the replaced table (other than main), which the one-snapshot table does not keep. */
  droppedRefs?: string[];
  /** All of them, when `droppedRefs` was capped to keep the result small. */
  droppedRefsTotal?: number;
  /** Delete files (row-level deletes of another engine) the replaced table's snapshot had; their deleted rows are visible again. */
  deleteFilesDropped?: number;
}

export interface CompactionSummary {
  warehouse: string;
  catalog: string;
  planId: string;
  dryRun: boolean;
  bucketsScanned: number;
  bucketsCompacted: number;
  /** Buckets found already compacted by an earlier run of the same plan (resume). */
  bucketsAlreadyCompacted: number;
  filesBefore: number;
  filesAfter: number;
  /** Files of buckets too large for one task, left for the next run (absent when none). */
  filesDeferred?: number;
  /** Buckets below the threshold compacted because a file had a column of Parquet's Null type (PlanSummary.nullTypedBuckets; absent when none). */
  nullTypedBuckets?: string[];
  nullTypedBucketsTotal?: number;
  /** Buckets below the threshold compacted because a file had a number column the table types otherwise (PlanSummary.retypedBuckets; absent when none). */
  retypedBuckets?: string[];
  retypedBucketsTotal?: number;
  /**
   * Compacted buckets whose result does not say their output has the plan's table types (BucketResult.typedAsTable:
   * written by a worker of an earlier release in a mixed deploy); absent when none.
   * Capped like failedBuckets; the next plan reads these outputs' footers again, all of them when the list is cut.
   */
  untypedOutputs?: string[];
  untypedOutputsTotal?: number;
  /** Objects under bucket folders the plan left alone (PlanSummary.ignoredObjects; absent when none). */
  objectsIgnored?: number;
  /** Among them, the keys that look like Parquet data, whose rows no table reads (PlanSummary.ignoredParquetLike; absent when none). */
  objectsIgnoredParquetLike?: string[];
  objectsIgnoredParquetLikeTotal?: number;
  /** Inputs rewritten (same name, new bytes) after they were read, left for the next run (absent when none). */
  filesRewritten?: number;
  /** Delete files of another engine in the replaced snapshot, not carried over (absent when none). */
  catalogDeleteFilesDropped?: number;
  /** The rebuild created the table (it did not exist in the catalog), or for a dry run would; absent otherwise. */
  catalogTableCreated?: boolean;
  /**
   * `useLock`: what a person should know of the pipeline's lock object. A run: whose stale or abandoned object
   * it took over. A dry run: what a run would find (held, or to be taken over). Absent when it was free or the run's own.
   */
  pipelineLock?: string;
  /** The schema the rebuild gave the table because files needed it (CatalogResult.schemaEvolved); absent otherwise. */
  catalogSchemaEvolved?: { schemaId: number; added: string[]; widened: string[] };
  /** Registered files readers cannot read as the table (CatalogResult.schemaMismatches, capped); absent when none. */
  schemaMismatchFiles?: UnreadableFile[];
  schemaMismatchFilesTotal?: number;
  /** Registered files with rows outside the partition of their path, which engines pruning on it skip (CatalogResult.partitionMismatches, capped); absent when none. */
  partitionMismatchFiles?: UnreadableFile[];
  partitionMismatchFilesTotal?: number;
  /** Files the replaced table registered that the rebuilt one does not, though they may hold rows (CatalogResult.droppedRegistrations, capped). */
  droppedRegistrations?: UnreadableFile[];
  droppedRegistrationsTotal?: number;
  /** Buckets that left the table because the warehouse no longer has them (CatalogResult.bucketsGone, capped), and their rows. */
  catalogBucketsGone?: string[];
  catalogBucketsGoneTotal?: number;
  catalogRowsGone?: number;
  /** Files the table had lost through another writer's delete and lists again (CatalogResult.registeredAgain, capped); absent when none. */
  catalogRegisteredAgain?: string[];
  catalogRegisteredAgainTotal?: number;
  /** Tags and branches of the replaced table the one-snapshot table does not keep (CatalogResult.droppedRefs, capped); absent when none. */
  catalogDroppedRefs?: string[];
  catalogDroppedRefsTotal?: number;
  rowsBefore: number;
  rowsAfter: number;
  duplicatesRemoved: number;
  bytesBefore: number;
  bytesAfter: number;
  failedBuckets: BucketFailure[];
  failedBucketsTotal: number;
  snapshotId: string | null;
  catalogDataFiles: number | null;
  catalogRows: number | null;
  /** Old manifests (and manifest lists) the rebuild expired; absent in summaries of earlier versions. */
  catalogMetadataFilesExpired?: number | null;
  unreadableFiles: UnreadableFile[];
  unreadableFilesTotal: number;
  sampleBuckets: string[];
  /** Runs of this workflow id it took (continue-as-new keeps history small on large warehouses). */
  workflowRuns: number;
}
