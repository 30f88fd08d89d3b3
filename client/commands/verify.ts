import { promises as fs, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bucketSelectionFromFlags, checkedInput, location, parse } from '../cli-args';
import type { BucketSelection } from '../../workflows/contract';
import { UsageError } from '../cli-args';
import { verifyWarehouse, ViolationKinds, type VerifyReport, type Violation, type ViolationKind } from '../../activities/verification/verify-warehouse';

export const verifyUsage = `earthcatalog-compact verify --warehouse W --catalog C [--cells a,b] [--years 2024,2025] [--iceberg-namespace NS] [--table T]
    [--catalog-name N] [--scratch-dir DIR] [--json]
    Checks the warehouse against its catalog and the compaction contract (read-only); exit 2 on any violation.
    --cells/--years check those buckets only (their files and the catalog's entries of them), as after a run given them.`;

/** Exit code when verification found violations (1 stays "could not verify"). */
export const EXIT_VIOLATIONS = 2;

/** Violations printed in text mode; --json always has all of them. */
const SHOWN = 50;

export async function runVerifyCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    warehouse: { type: 'string' },
    catalog: { type: 'string' },
    'iceberg-namespace': { type: 'string' },
    table: { type: 'string' },
    'catalog-name': { type: 'string' },
    cells: { type: 'string' },
    years: { type: 'string' },
    'scratch-dir': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (!values.warehouse) throw new UsageError('--warehouse is required');
  if (!values.catalog) throw new UsageError('--catalog is required');
  const selection = bucketSelectionFromFlags(values);
  // The rules a compaction's locations and names follow: a presigned catalog URL or a malformed ARN is a
  // usage error here too, not a missing catalog (with the URL's signature in the report).
  const names = { namespace: values['iceberg-namespace'], table: values.table, catalogName: values['catalog-name'] };
  const given = { warehouse: location(values.warehouse, 'warehouse'), catalog: location(values.catalog, 'catalog') };
  try {
    checkedInput({ ...given, ...Object.fromEntries(Object.entries(names).filter(([, v]) => v !== undefined)), ...selection });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/^invalid compaction input: /, ''));
  }
  const { warehouse, catalog } = given;
  // Downloads of an S3 warehouse go below a directory of this process, removed also when it is
  // interrupted (Ctrl-C mid-download would otherwise leave up to a batch of files behind).
  const scratchBase = path.resolve(values['scratch-dir'] ?? os.tmpdir());
  // Made when missing, as the worker makes its --scratch-dir; a path that cannot be a directory is named.
  await fs.mkdir(scratchBase, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`--scratch-dir ${scratchBase} cannot be used as a directory: ${err.code ?? err.message}`);
  });
  const scratchDir = await fs.mkdtemp(path.join(scratchBase, 'earthcatalog-verify-'));
  const removeScratch = () => rmSync(scratchDir, { recursive: true, force: true });
  const interrupted = (signal: NodeJS.Signals) => {
    removeScratch();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const report = await verifyWarehouse({
      ...selection,
      warehouse,
      catalog,
      ...names,
      scratchDir,
    });
    console.log(values.json ? JSON.stringify(report, null, 2) : formatVerifyReport(report));
    return report.ok ? 0 : EXIT_VIOLATIONS;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    removeScratch();
  }
}

export function formatVerifyReport(r: VerifyReport): string {
  const s = r.stats;
  const lines = [
    `verify ${r.warehouse} against ${r.catalog} (${r.table})${r.selection ? `, only ${describeSelection(r.selection)}` : ''}`,
    `  warehouse ${s.dataFiles} data files in ${s.buckets} buckets (${s.bucketsWithSeveralFiles} with several files), ${s.compactedFiles} compacted, ${s.rows} rows`,
    s.catalogFiles === null
      ? '  catalog   not readable'
      : `  catalog   ${s.snapshotCount} snapshot(s), ${s.catalogFiles} data files, ${s.catalogRows} rows`,
  ];
  if (r.unmatched) lines.push(`  note: no data file and no catalog entry in ${describeSelection(r.unmatched)}: nothing of them was checked`);
  if (r.outsideLayout) {
    const shown = r.outsideLayout.slice(0, SHOWN).join(', ');
    const more = r.outsideLayout.length > SHOWN ? ` … and ${r.outsideLayout.length - SHOWN} more (--json lists all)` : '';
    lines.push(
      `  note: ${r.outsideLayout.length} file(s) under bucket folders look like Parquet data but are no data files of the layout ` +
        `(grid_partition=<cell>/year=<yyyy>/<name>.parquet), so no reader of the table sees their rows: ${shown}${more}`,
    );
  }
  if (r.ok) {
    lines.push(`OK: no violations (${s.durationMs} ms)`);
    return lines.join('\n');
  }
  // By kind, each kind listed: a thousand duplicate ids of buckets below the threshold must not hide the
  // one file missing from the warehouse.
  const byKind = new Map<ViolationKind, Violation[]>();
  for (const v of r.violations) byKind.set(v.kind, [...(byKind.get(v.kind) ?? []), v]);
  const counts = [...byKind].map(([kind, vs]) => `${vs.length} ${kind}`).join(', ');
  lines.push(`FAILED: ${r.violations.length} violation(s)${byKind.size > 1 ? `: ${counts}` : ''}`);
  const width = Math.max(...r.violations.map((v) => v.kind.length));
  const perKind = Math.max(3, Math.floor(SHOWN / byKind.size));
  for (const [kind, vs] of byKind) {
    for (const v of vs.slice(0, perKind)) lines.push(`  ${v.kind.padEnd(width)}  ${v.object}: ${v.detail}`);
    if (vs.length > perKind) lines.push(`  … and ${vs.length - perKind} more ${kind} (--json lists all)`);
    const advice = ADVICE[kind];
    if (advice) lines.push(`  ${' '.repeat(width)}  what to do: ${advice}`);
  }
  return lines.join('\n');
}

const REBUILT = 'the next compaction (of any buckets; not a --dry-run) rebuilds the table from the files as they are, in one snapshot';

/** What clears a kind of violation, where one thing does; the others depend on the file. */
const ADVICE: Partial<Record<ViolationKind, string>> = {
  [ViolationKinds.notInCatalog]: `${REBUILT}, registering every data file`,
  [ViolationKinds.missingFromWarehouse]:
    'readers of the table fail on these files: if something other than a compaction deleted or moved them, restore them; ' +
    "otherwise the next compaction's rebuild (of any buckets; not a --dry-run) leaves them out of the table",
  [ViolationKinds.duplicateCatalogEntry]: REBUILT,
  [ViolationKinds.recordCountMismatch]: REBUILT,
  [ViolationKinds.fileSizeMismatch]: REBUILT,
  [ViolationKinds.columnBoundsMismatch]: REBUILT,
  [ViolationKinds.columnCountsMismatch]: REBUILT,
  [ViolationKinds.snapshotCount]: REBUILT,
  [ViolationKinds.catalogMissing]: 'check --catalog; the first compaction of the warehouse creates it',
  [ViolationKinds.duplicateId]: "a compaction of the bucket keeps each id's row with the latest updated (--threshold 1 for a bucket of one file)",
  [ViolationKinds.nullId]: 'give those rows an id or remove them: a compaction refuses the bucket until then',
  [ViolationKinds.unreadableFile]: 'replace, rename or remove the file: until then the rebuild does not register it, and a compaction of its bucket fails (BadBucketData)',
};

function describeSelection(sel: BucketSelection): string {
  return [sel.cells && `cells ${sel.cells.join(',')}`, sel.years && `years ${sel.years.join(',')}`].filter(Boolean).join(' and ');
}
