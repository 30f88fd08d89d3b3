/**
 * Iceberg table metadata (format v2) of a rebuilt table: the existing table's identity, schemas, specs,
 * sort orders and properties, with exactly one new snapshot.
 *
 * Snapshot ids are 63-bit: they stay decimal strings in memory and are written as JSON numbers by
 * `serializeTableMetadata` (JSON.parse/stringify would round them to 2^53 precision).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IcebergSchema, IcebergType, PartitionSpec, SortOrder } from './iceberg-schema';
import { NAME_MAPPING_PROPERTY, defaultPartitionSpec, defaultSchema, defaultSortOrder, defaultTableProperties, extendNameMapping } from './iceberg-schema';

export interface SnapshotJson {
  'snapshot-id': string;
  'parent-snapshot-id'?: string;
  'sequence-number': number;
  'timestamp-ms': number;
  'manifest-list': string;
  summary: Record<string, string>;
  'schema-id'?: number;
}

export interface TableMetadataJson {
  'format-version': number;
  'table-uuid': string;
  location: string;
  'last-sequence-number': number;
  'last-updated-ms': number;
  'last-column-id': number;
  schemas: IcebergSchema[];
  'current-schema-id': number;
  'partition-specs': PartitionSpec[];
  'default-spec-id': number;
  'last-partition-id': number;
  properties?: Record<string, string>;
  'current-snapshot-id'?: string | null;
  snapshots?: SnapshotJson[];
  'snapshot-log'?: Array<{ 'timestamp-ms': number; 'snapshot-id': string }>;
  'metadata-log'?: Array<{ 'timestamp-ms': number; 'metadata-file': string }>;
  'sort-orders': SortOrder[];
  'default-sort-order-id': number;
  /** Retention settings of a branch (`min-snapshots-to-keep`, `max-snapshot-age-ms`, `max-ref-age-ms`) ride along. */
  refs?: Record<string, { 'snapshot-id': string; type: string } & Record<string, unknown>>;
  statistics?: unknown[];
  'partition-statistics'?: unknown[];
  [other: string]: unknown;
}

/**
 * Marks the snapshots this tool's rebuilds commit, so the next rebuild knows how far back in the
 * metadata log the files it may clean up go (Iceberg allows any key in a snapshot summary).
 */
export const REBUILD_SUMMARY_KEY = 'earthcatalog.rebuild';

const ID_KEYS = /"(snapshot-id|current-snapshot-id|parent-snapshot-id)"(\s*):(\s*)(-?\d+)/g;
const QUOTED_ID_KEYS = /"(snapshot-id|current-snapshot-id|parent-snapshot-id)":"(-?\d+)"/g;

/** Parses metadata JSON keeping snapshot ids exact (as strings); `name` labels errors. */
export function parseTableMetadata(text: string, name: string): TableMetadataJson {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.replace(ID_KEYS, '"$1"$2:$3"$4"'));
  } catch (err) {
    throw new Error(`table metadata ${name} is not valid JSON: ${(err as Error).message}`);
  }
  const m = parsed as TableMetadataJson;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new Error(`table metadata ${name} is not a JSON object`);
  if (m['format-version'] === undefined) throw new Error(`table metadata ${name} lacks "format-version": not Iceberg table metadata, or damaged`);
  if (m['format-version'] !== 2) {
    throw new Error(`table metadata ${name} has format-version ${String(m['format-version'])}; only format 2 tables can be rebuilt`);
  }
  for (const key of ['table-uuid', 'location', 'schemas', 'current-schema-id', 'partition-specs', 'default-spec-id'] as const) {
    if (m[key] === undefined) throw new Error(`table metadata ${name} lacks "${key}"`);
  }
  currentSchema(m, name);
  defaultSpec(m, name);
  return m;
}

/** Writes metadata JSON with snapshot ids as JSON numbers (the Iceberg spec's type for them). */
export function serializeTableMetadata(m: TableMetadataJson): string {
  return JSON.stringify(m).replace(QUOTED_ID_KEYS, '"$1":$2');
}

export function currentSchema(m: TableMetadataJson, name: string): IcebergSchema {
  const s = m.schemas.find((x) => x['schema-id'] === m['current-schema-id']);
  if (!s) throw new Error(`table metadata ${name}: current-schema-id ${m['current-schema-id']} is not among its schemas`);
  return s;
}

export function defaultSpec(m: TableMetadataJson, name: string): PartitionSpec {
  const s = m['partition-specs'].find((x) => x['spec-id'] === m['default-spec-id']);
  if (!s) throw new Error(`table metadata ${name}: default-spec-id ${m['default-spec-id']} is not among its partition specs`);
  return s;
}

/** A positive random 63-bit id, as Iceberg writers make them. */
export function newSnapshotId(): string {
  const n = randomBytes(8).readBigUInt64BE(0) & 0x7fff_ffff_ffff_ffffn;
  return (n === 0n ? 1n : n).toString();
}

/**
 * `<dir>/<NNNNN>-<uuid>.metadata.json`, NNNNN one more than the previous file's (pyiceberg's naming). The
 * UUID is the commit's, which its manifests and manifest list carry too: every file of one commit can be
 * told by it.
 */
export function nextMetadataFileName(metadataDir: string, previousLocation: string | undefined, commitUuid: string): string {
  const prev = previousLocation ? /(?:^|\/)(\d+)-[^/]*\.metadata\.json$/.exec(previousLocation) : null;
  const version = previousLocation ? (prev ? Number(prev[1]) + 1 : 1) : 0;
  return `${metadataDir}/${String(version).padStart(5, '0')}-${commitUuid}.metadata.json`;
}

/** Metadata of a table that does not exist yet, without snapshots (the rebuild adds the one snapshot). */
export function initialTableMetadata(location: string, nowMs: number): TableMetadataJson {
  const schema = defaultSchema();
  const spec = defaultPartitionSpec();
  return {
    'format-version': 2,
    'table-uuid': randomUUID(),
    location,
    'last-sequence-number': 0,
    'last-updated-ms': nowMs,
    'last-column-id': maxFieldId(schema.fields.map((f) => ({ id: f.id, type: f.type }))),
    schemas: [schema],
    'current-schema-id': schema['schema-id'],
    'partition-specs': [spec],
    'default-spec-id': spec['spec-id'],
    'last-partition-id': Math.max(...spec.fields.map((f) => f['field-id'])),
    properties: defaultTableProperties(schema),
    'sort-orders': [defaultSortOrder()],
    'default-sort-order-id': 0,
  };
}

/** The largest field id in `fields`, nested fields included. */
export function maxFieldId(fields: Array<{ id: number; type: IcebergType }>): number {
  let max = 0;
  for (const f of fields) {
    max = Math.max(max, f.id);
    const t = f.type;
    if (typeof t === 'string') continue;
    if (t.type === 'struct') max = Math.max(max, maxFieldId(t.fields));
    else if (t.type === 'list') max = Math.max(max, maxFieldId([{ id: t['element-id'], type: t.element }]));
    else max = Math.max(max, maxFieldId([{ id: t['key-id'], type: t.key }, { id: t['value-id'], type: t.value }]));
  }
  return max;
}

export interface SnapshotTotals {
  dataFiles: number;
  records: number;
  filesSize: number;
  partitions: number;
}

export interface RebuildArgs {
  /** The schema the registered files need (SchemaEvolution): `base`'s current one, or a new one with its last column id. */
  schema?: { schema: IcebergSchema; lastColumnId: number };
  snapshotId: string;
  manifestList: string;
  totals: SnapshotTotals;
  /** Location of the metadata file `base` was read from; undefined for a new table. */
  previousMetadataLocation: string | undefined;
  nowMs: number;
}

const DEFAULT_PREVIOUS_VERSIONS_MAX = 100;

/**
 * The metadata after the rebuild: `base` (the current metadata, or initialTableMetadata) with every
 * snapshot, ref and statistics file replaced by one append snapshot. Unknown fields of `base` are kept.
 */
export function rebuiltTableMetadata(base: TableMetadataJson, args: RebuildArgs): TableMetadataJson {
  const current = currentSchema(base, base.location);
  const schema = args.schema?.schema ?? current;
  const evolved = schema !== current;
  const properties = { ...(base.properties ?? {}) };
  // The files carry no field ids: every field needs an entry, or readers cannot find its column.
  const mapping = extendNameMapping(properties[NAME_MAPPING_PROPERTY] || undefined, schema);
  if (mapping !== undefined) properties[NAME_MAPPING_PROPERTY] = mapping;
  const sequenceNumber = (base['last-sequence-number'] ?? 0) + 1;
  const t = args.totals;
  // Timestamps never go backwards in one table's history, even if this machine's clock is behind.
  const nowMs = Math.max(args.nowMs, base['last-updated-ms'] ?? 0);
  const snapshot: SnapshotJson = {
    'snapshot-id': args.snapshotId,
    'sequence-number': sequenceNumber,
    'timestamp-ms': nowMs,
    'manifest-list': args.manifestList,
    summary: {
      operation: 'append',
      'added-data-files': String(t.dataFiles),
      'added-records': String(t.records),
      'added-files-size': String(t.filesSize),
      'changed-partition-count': String(t.partitions),
      'total-data-files': String(t.dataFiles),
      'total-records': String(t.records),
      'total-files-size': String(t.filesSize),
      'total-delete-files': '0',
      'total-position-deletes': '0',
      'total-equality-deletes': '0',
      [REBUILD_SUMMARY_KEY]: 'true',
    },
    'schema-id': schema['schema-id'],
  };
  let metadataLog = [...(base['metadata-log'] ?? [])];
  if (args.previousMetadataLocation) {
    metadataLog.push({ 'timestamp-ms': base['last-updated-ms'], 'metadata-file': args.previousMetadataLocation });
  }
  const keep = Number(properties['write.metadata.previous-versions-max'] ?? DEFAULT_PREVIOUS_VERSIONS_MAX);
  if (Number.isInteger(keep) && keep >= 1 && metadataLog.length > keep) metadataLog = metadataLog.slice(-keep);
  return {
    ...base,
    ...(evolved
      ? {
          schemas: [...base.schemas, schema],
          'current-schema-id': schema['schema-id'],
          'last-column-id': Math.max(base['last-column-id'], args.schema!.lastColumnId),
        }
      : {}),
    'last-sequence-number': sequenceNumber,
    'last-updated-ms': nowMs,
    properties,
    'current-snapshot-id': args.snapshotId,
    snapshots: [snapshot],
    'snapshot-log': [{ 'timestamp-ms': nowMs, 'snapshot-id': args.snapshotId }],
    'metadata-log': metadataLog,
    // main keeps what another engine set on it (its retention), only its snapshot changes.
    refs: { main: { ...(base.refs?.main ?? {}), 'snapshot-id': args.snapshotId, type: 'branch' } },
    statistics: [],
    'partition-statistics': [],
  };
}
