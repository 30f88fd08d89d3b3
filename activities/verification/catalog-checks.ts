/**
 * The catalog against the warehouse: the current snapshot must list every data file exactly once, with
 * the file's row count, size and the partition values of its hive path, and be the table's only snapshot.
 */
import type { DescribedTable } from '../catalog/describe-table';
import { topLevelField } from '../catalog/iceberg-schema';
import { currentSchema, defaultSpec, maxFieldId } from '../catalog/table-metadata';
import type { PartitionValue } from '../catalog/manifest-writer';
import { cellValueOf, parseDataFileKey, selectionFilter } from '../storage/warehouse-layout';
import type { BucketSelection } from '../../workflows/contract';
import { ViolationKinds, type Violation } from './report';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import type { IcebergSchema, PartitionField } from '../catalog/iceberg-schema';
import { ParquetFooterError, readParquetFooter, type ParquetFooter } from '../catalog/parquet-footer';
import { SchemaEvolution } from '../catalog/schema-evolution';
import { LocalWarehouseStore } from '../storage/local-store';
import type { LocalDataFile } from './parquet-checks';
import type { PhysicalDataFile } from './warehouse-files';

const EPOCH_YEAR = 1970;

type PartitionCheck = (name: string, file: PhysicalDataFile) => PartitionValue | undefined;

/** Expected partition values of a file, for the spec fields that the hive path determines. */
function partitionExpectations(table: DescribedTable, label: string): Map<string, PartitionCheck> {
  const checks = new Map<string, PartitionCheck>();
  const schema = currentSchema(table.metadata, label);
  for (const field of defaultSpec(table.metadata, label).fields) {
    const source = topLevelField(schema, field['source-id'])?.name;
    if (field.transform === 'identity' && source === 'grid_partition') checks.set(field.name, (_n, f) => cellValueOf(f.parsed.bucket.cell));
    else if (field.transform === 'year') checks.set(field.name, (_n, f) => f.parsed.bucket.year - EPOCH_YEAR);
  }
  return checks;
}

/**
 * The catalog entries a check of `selection` looks at: those of its buckets, and those that are no data
 * file of the warehouse's layout at all (registered outside it), which belong to no bucket.
 */
export function entriesInSelection(
  table: DescribedTable,
  keyOfPath: (p: string) => string | undefined,
  selection: BucketSelection,
): DescribedTable['dataFiles'] {
  if (!selection.cells && !selection.years) return table.dataFiles;
  const selected = selectionFilter(selection);
  return table.dataFiles.filter((entry) => {
    const key = keyOfPath(entry.path);
    const parsed = key === undefined ? undefined : parseDataFileKey(key);
    return !parsed || selected(parsed.bucket);
  });
}

/** `files` and `entries` are of the same selection of buckets (entriesInSelection). */
export function compareCatalogWithFiles(
  table: DescribedTable,
  entries: DescribedTable['dataFiles'],
  files: readonly PhysicalDataFile[],
  rowsByKey: ReadonlyMap<string, number>,
  keyOfPath: (p: string) => string | undefined,
  catalogLabel: string,
): Violation[] {
  const violations: Violation[] = [];
  if (table.snapshotCount !== 1) {
    violations.push({
      kind: ViolationKinds.snapshotCount,
      object: catalogLabel,
      detail: `the table has ${table.snapshotCount} snapshots; a rebuilt table has exactly 1`,
    });
  }
  const physical = new Map(files.map((f) => [f.key, f]));
  const partitionChecks = partitionExpectations(table, catalogLabel);
  const listed = new Set<string>();
  for (const entry of entries) {
    const key = keyOfPath(entry.path);
    const file = key === undefined ? undefined : physical.get(key);
    if (!file) {
      violations.push({
        kind: ViolationKinds.missingFromWarehouse,
        object: entry.path,
        detail: `listed in the catalog (${entry.recordCount} rows) but not a data file of the warehouse`,
      });
      continue;
    }
    if (listed.has(file.key)) {
      violations.push({ kind: ViolationKinds.duplicateCatalogEntry, object: file.key, detail: `the catalog lists ${entry.path} more than once` });
      continue;
    }
    listed.add(file.key);
    const rows = rowsByKey.get(file.key);
    if (rows !== undefined && rows !== entry.recordCount) {
      violations.push({
        kind: ViolationKinds.recordCountMismatch,
        object: file.key,
        detail: `the catalog records ${entry.recordCount} rows, the file has ${rows}`,
      });
    }
    if (entry.size !== file.size) {
      violations.push({
        kind: ViolationKinds.fileSizeMismatch,
        object: file.key,
        detail: `the catalog records ${entry.size} bytes, the file has ${file.size}`,
      });
    }
    for (const [name, expected] of partitionChecks) {
      const want = expected(name, file);
      const got = entry.partition[name];
      if (want !== undefined && got !== want) {
        violations.push({
          kind: ViolationKinds.partitionMismatch,
          object: file.key,
          detail: `partition field ${name} is ${JSON.stringify(got)} in the catalog, the path says ${JSON.stringify(want)}`,
        });
      }
    }
  }
  for (const f of files) {
    if (!listed.has(f.key)) {
      violations.push({ kind: ViolationKinds.notInCatalog, object: f.key, detail: `the data file is in the warehouse but not in the catalog's current snapshot` });
    }
  }
  return violations;
}

/**
 * Files whose columns readers cannot map to the table's current schema: a column the schema lacks (the
 * table was not rebuilt since, or by a tool that does not evolve it), a type wider than the schema's, or
 * one no evolution makes readable. pyiceberg fails every scan that touches such a file.
 */
export async function checkSchemaFit(
  files: readonly LocalDataFile[],
  schema: IcebergSchema,
  nameMapping: string | undefined,
  partitionFields: readonly PartitionField[],
): Promise<Violation[]> {
  const violations: Violation[] = [];
  const lastId = maxFieldId(schema.fields);
  for (const f of files) {
    const { size } = await fs.stat(f.path);
    let footer: ParquetFooter;
    try {
      footer = await readParquetFooter(new LocalWarehouseStore(path.dirname(f.path)), path.basename(f.path), size);
    } catch (err) {
      if (!(err instanceof ParquetFooterError)) throw err;
      violations.push({ kind: ViolationKinds.unreadableFile, object: f.key, detail: err.reason });
      continue;
    }
    // Judged against the table's schema alone: nothing of it is committed. New columns are numbered
    // after the schema's own, as a rebuild would number them.
    const fit = new SchemaEvolution(schema, lastId, [], nameMapping, partitionFields);
    const { problem } = fit.admit(footer.columns);
    const details = [
      ...(fit.added.length ? [`column(s) the table's schema lacks: ${fit.added.join(', ')}`] : []),
      ...(fit.widened.length ? [`type(s) wider than the table's: ${fit.widened.join(', ')}`] : []),
      ...(problem ? [problem] : []),
    ];
    // A renamed column's two names are read, one of them as null: the problem says so itself.
    const readable = details.length === 1 && problem !== undefined && /are both names of the table's column/.test(problem);
    if (details.length) violations.push({ kind: ViolationKinds.schemaMismatch, object: f.key, detail: `${details.join('; ')}${readable ? '' : ' (readers fail on the file)'}` });
  }
  return violations;
}
