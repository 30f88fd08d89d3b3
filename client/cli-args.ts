/** Flag parsing shared by the subcommands: one parser, one error style. */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { parseBucketSelection, parseCompactionInput, type BucketSelection, type CompactionInput } from '../workflows/contract';

export class UsageError extends Error {}

/**
 * A command that ran and found the object it acts on in the wrong state for it (a schedule that already
 * exists, or does not): its own exit code, so a deploy script can tell that from an outage (1) and go on.
 */
export class StateError extends Error {}

/** Exit code of a StateError. */
export const STATE_EXIT = 4;

export const connectionFlags = {
  address: { type: 'string' },
  namespace: { type: 'string' },
  'task-queue': { type: 'string' },
} as const;

export const compactionFlags = {
  warehouse: { type: 'string' },
  catalog: { type: 'string' },
  threshold: { type: 'string' },
  'dry-run': { type: 'boolean' },
  'use-lock': { type: 'boolean' },
  'pipeline-lock': { type: 'string' },
  'max-parallel': { type: 'string' },
  cells: { type: 'string' },
  years: { type: 'string' },
  'iceberg-namespace': { type: 'string' },
  table: { type: 'string' },
  'catalog-name': { type: 'string' },
  'lock-timeout': { type: 'string' },
} as const;

/**
 * The flags of one command. A stray word is refused, not dropped: `dry-run` without its dashes would
 * otherwise compact for real, and `schedule delete other-id` act on the default schedule. A flag given
 * empty (a script's unset variable: `--cells "$CELLS"`) is refused too: dropped or read as its default,
 * `--cells ""` would compact every cell, `--table ""` the default table, `--lock-timeout=` wait 0 s.
 */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  let parsed;
  try {
    parsed = parseArgs({ args: withNegativeValues(argv, options), allowPositionals: false, strict: true, options });
  } catch (err) {
    // Node puts its hint (`--max-parallel=-1` for a value that starts with a dash) on a second line.
    throw new UsageError((err as Error).message.replace(/\s*\n\s*/g, ' '));
  }
  for (const [name, value] of Object.entries(parsed.values)) {
    if (value === '') throw new UsageError(`--${name} was given empty: give it a value or leave it out`);
  }
  return parsed;
}

/**
 * `--threshold -1` as `--threshold=-1`: node's parser takes a value that starts with a dash for a flag and
 * answers with its hint about `=`, where the operator should hear what the flag takes. No flag is a dash
 * and a digit, so such a word can only be the value.
 */
function withNegativeValues(argv: string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i]!.startsWith('--') ? argv[i]!.slice(2) : undefined;
    const next = argv[i + 1];
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else out.push(argv[i]!);
  }
  return out;
}

/** `--name`'s value as a whole number (undefined when absent); `positive` refuses 0 and below. */
export function wholeNumberFlag(name: string, raw: string | undefined, positive = false): number | undefined {
  if (raw === undefined) return undefined;
  // Decimal digits only: Number() would take "1e3", "2024.0" and "0x7e8" as whole numbers, and "" as 0.
  const n = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (Number.isNaN(n) || (positive && n <= 0)) throw new UsageError(`--${name} must be a ${positive ? 'positive ' : ''}whole number, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * Local paths are made absolute here, where the operator's working directory is known. A `file://` URI
 * is a local path too; a URI of another scheme would otherwise be taken for a relative path
 * (`./gs:/bucket`) and fail only once the run starts.
 */
export function location(raw: string, flag: string): string {
  // An ARN in another case is left as given, for the input's check to refuse, not made a relative path.
  if (raw.startsWith('s3://') || /^arn:/i.test(raw)) return raw;
  if (/^file:\/\//i.test(raw)) {
    try {
      return fileURLToPath(raw);
    } catch (err) {
      // A user and password before the host (`file://key:secret@host/…`) stay off the screen and out of logs.
      // Up to the last @: a pasted secret may hold a / (base64), which no URL parser would have let in.
      const shown = raw.replace(/^(file:\/\/).*@/i, '$1…@');
      throw new UsageError(`--${flag} ${JSON.stringify(shown)} is not a file URI of this machine: ${(err as Error).message}`);
    }
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw);
  if (scheme) throw new UsageError(`--${flag} takes a local path or an s3:// URI, not a ${scheme[1]}:// URI: ${JSON.stringify(raw)}`);
  return path.resolve(raw);
}

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/**
 * The workflow input from compaction flags (`--namespace` is Temporal's, as in the temporal CLI; Iceberg's
 * is `--iceberg-namespace`), checked as the workflow will check it, so a bad value is a usage error.
 */
export function compactionInputFromFlags(values: Values, extra: Partial<CompactionInput> = {}): CompactionInput {
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const warehouse = str('warehouse');
  const catalog = str('catalog');
  if (!warehouse) throw new UsageError('--warehouse is required');
  if (!catalog) throw new UsageError('--catalog is required');
  const input: CompactionInput = { warehouse: location(warehouse, 'warehouse'), catalog: location(catalog, 'catalog') };
  const threshold = wholeNumberFlag('threshold', str('threshold'));
  if (threshold !== undefined) input.threshold = threshold;
  if (values['dry-run']) input.dryRun = true;
  if (values['use-lock']) input.useLock = true;
  const pipelineLock = str('pipeline-lock');
  if (pipelineLock !== undefined) input.pipelineLock = location(pipelineLock, 'pipeline-lock');
  const parallel = wholeNumberFlag('max-parallel', str('max-parallel'));
  if (parallel !== undefined) input.maxParallelBuckets = parallel;
  Object.assign(input, selectionFromFlags(values));
  const ns = str('iceberg-namespace');
  if (ns !== undefined) input.namespace = ns;
  const table = str('table');
  if (table !== undefined) input.table = table;
  const catalogName = str('catalog-name');
  if (catalogName !== undefined) input.catalogName = catalogName;
  const lockTimeout = wholeNumberFlag('lock-timeout', str('lock-timeout'));
  if (lockTimeout !== undefined) input.lockTimeoutSeconds = lockTimeout;
  return checkedInput({ ...input, ...extra });
}

/** `--cells a,b` and `--years 2024,2025` as lists, unchecked. */
function selectionFromFlags(values: Values): { cells?: string[]; years?: number[] } {
  const out: { cells?: string[]; years?: number[] } = {};
  const cells = values.cells;
  if (typeof cells === 'string') out.cells = listItems('cells', cells);
  const years = values.years;
  if (typeof years === 'string') out.years = listItems('years', years).map((y) => wholeNumberFlag('years', y)!);
  return out;
}

/**
 * The comma-separated items of `--name`. An empty item is refused, not dropped: `--cells "$A,$B"` with
 * `B` unset would otherwise compact (or verify) one cell where the operator listed two.
 */
function listItems(name: string, raw: string): string[] {
  const items = raw.split(',').map((item) => item.trim());
  const empty = items.findIndex((item) => item === '');
  if (empty >= 0) throw new UsageError(`--${name} item ${empty + 1} of ${JSON.stringify(raw)} is empty: list the ${name} separated by single commas`);
  return items;
}

/** The buckets `--cells`/`--years` select, checked as a compaction checks them (absent: all). */
export function bucketSelectionFromFlags(values: Values): BucketSelection {
  try {
    return parseBucketSelection(selectionFromFlags(values));
  } catch (err) {
    throw usageErrorNamingFlags(err);
  }
}

/** The flag that sets each input field, for messages about flags. */
const FLAG_OF_FIELD: Readonly<Record<string, string>> = {
  warehouse: 'warehouse',
  catalog: 'catalog',
  threshold: 'threshold',
  cells: 'cells',
  years: 'years',
  table: 'table',
  maxParallelBuckets: 'max-parallel',
  lockTimeoutSeconds: 'lock-timeout',
  namespace: 'iceberg-namespace',
  catalogName: 'catalog-name',
  dryRun: 'dry-run',
  useLock: 'use-lock',
  pipelineLock: 'pipeline-lock',
};

/** A UsageError of an input or selection error: its problems name input fields; whoever typed flags is told the flag. */
function usageErrorNamingFlags(err: unknown): UsageError {
  const message = (err as Error).message.replace(/(: |; )([A-Za-z]+)(\.\d+)?: /g, (all, sep: string, field: string, index: string | undefined) => {
    const flag = FLAG_OF_FIELD[field];
    return flag ? `${sep}--${flag}${index ? ` item ${Number(index.slice(1)) + 1}` : ''}: ` : all;
  });
  return new UsageError(message);
}

/** The input as the workflow will parse it; its problems as a usage error (the flags were wrong). */
export function checkedInput(input: CompactionInput): CompactionInput {
  try {
    parseCompactionInput(input);
  } catch (err) {
    throw usageErrorNamingFlags(err);
  }
  return input;
}

/** `s` as one POSIX shell word, for the commands printed for an operator to copy. */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The arguments that reach one workflow from a printed command: its id and the flags that reach its server. */
export function workflowArgs(workflowId: string, connection: readonly string[] = []): string {
  return [`--workflow-id ${shellWord(workflowId)}`, ...connection].join(' ');
}
