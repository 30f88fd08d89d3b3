/**
 * Iceberg format-v2 data manifests and the manifest list (Avro), with the field ids of the Iceberg spec.
 * Every entry is ADDED in the one new snapshot; its sequence numbers are inherited from the manifest list.
 */
import { randomUUID } from 'node:crypto';
import { encodeAvroFile } from './avro-file';
import type { AvroSchemaJson } from './avro-file';
import type { IcebergSchema, PartitionField, PartitionSpec } from './iceberg-schema';
import { topLevelField } from './iceberg-schema';
import type { ColumnMetrics } from './column-metrics';

/** A partition value as stored in the manifest: strings, ints (year ordinals), or null. */
export type PartitionValue = string | number | null;

export interface DataFileEntry {
  path: string;
  recordCount: number;
  sizeBytes: number;
  /** Values in the order of the partition spec's fields. */
  partition: PartitionValue[];
  /** Column metrics from the file's footer (absent: the manifest says nothing about columns). */
  metrics?: ColumnMetrics;
}

/** One row of the manifest list. */
export interface ManifestFileRecord {
  manifest_path: string;
  manifest_length: bigint;
  partition_spec_id: number;
  content: number;
  sequence_number: bigint;
  min_sequence_number: bigint;
  added_snapshot_id: bigint;
  added_files_count: number;
  existing_files_count: number;
  deleted_files_count: number;
  added_rows_count: bigint;
  existing_rows_count: bigint;
  deleted_rows_count: bigint;
  partitions: FieldSummary[] | null;
  key_metadata: Buffer | null;
}

interface FieldSummary {
  contains_null: boolean;
  contains_nan: boolean | null;
  lower_bound: Buffer | null;
  upper_bound: Buffer | null;
}

/**
 * Iceberg's own cap is on bytes (8 MB by default); ours is on entries: with column metrics an entry of
 * the 28-column table takes ~1.3 KB, so a manifest stays near 6 MB whatever the warehouse size.
 */
export const MAX_ENTRIES_PER_MANIFEST = 5_000;

type PrimitiveResult = 'string' | 'int' | 'long';

/** The Iceberg result type of a partition field (the type its values have in manifests). */
export function partitionResultType(field: PartitionField, schema: IcebergSchema): PrimitiveResult {
  const source = topLevelField(schema, field['source-id']);
  if (!source) throw new Error(`partition field ${field.name} refers to unknown column id ${field['source-id']}`);
  if (['year', 'month', 'day', 'hour'].includes(field.transform) || field.transform.startsWith('bucket[')) return 'int';
  if (field.transform === 'identity' || field.transform.startsWith('truncate[')) {
    if (source.type === 'string' || source.type === 'int' || source.type === 'long') return source.type;
  }
  throw new Error(`partition field ${field.name} (${field.transform} of ${source.name}: ${JSON.stringify(source.type)}) is not supported`);
}

/** Avro names allow [A-Za-z0-9_] only; same escaping as Iceberg's writers (readers resolve by field id anyway). */
function avroName(name: string): string {
  let out = '';
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    if (/[A-Za-z_]/.test(c) || (i > 0 && /[0-9]/.test(c))) out += c;
    else if (/[0-9]/.test(c)) out += '_' + c;
    else out += '_x' + c.charCodeAt(0).toString(16).toUpperCase();
  }
  return out;
}

function optional(name: string, type: unknown, fieldId: number): Record<string, unknown> {
  return { name, type: ['null', type], default: null, 'field-id': fieldId };
}

/** Iceberg's int-keyed maps are Avro arrays of key/value records; an empty map is written as null. */
function avroIntMap<V>(map: ReadonlyMap<number, V> | undefined): Array<{ key: number; value: V }> | null {
  if (!map || map.size === 0) return null;
  return [...map].sort(([a], [b]) => a - b).map(([key, value]) => ({ key, value }));
}

function intMap(name: string, fieldId: number, keyId: number, valueId: number, valueType: string): Record<string, unknown> {
  return optional(
    name,
    {
      type: 'array',
      logicalType: 'map',
      items: {
        type: 'record',
        name: `k${keyId}_v${valueId}`,
        fields: [
          { name: 'key', type: 'int', 'field-id': keyId },
          { name: 'value', type: valueType, 'field-id': valueId },
        ],
      },
    },
    fieldId,
  );
}

export function manifestEntrySchema(spec: PartitionSpec, schema: IcebergSchema): AvroSchemaJson {
  const partitionRecord = {
    type: 'record',
    name: 'r102',
    fields: spec.fields.map((f) => optional(avroName(f.name), partitionResultType(f, schema), f['field-id'])),
  };
  return {
    type: 'record',
    name: 'manifest_entry',
    fields: [
      { name: 'status', type: 'int', 'field-id': 0 },
      optional('snapshot_id', 'long', 1),
      optional('sequence_number', 'long', 3),
      optional('file_sequence_number', 'long', 4),
      {
        name: 'data_file',
        'field-id': 2,
        type: {
          type: 'record',
          name: 'r2',
          fields: [
            { name: 'content', type: 'int', 'field-id': 134 },
            { name: 'file_path', type: 'string', 'field-id': 100 },
            { name: 'file_format', type: 'string', 'field-id': 101 },
            { name: 'partition', type: partitionRecord, 'field-id': 102 },
            { name: 'record_count', type: 'long', 'field-id': 103 },
            { name: 'file_size_in_bytes', type: 'long', 'field-id': 104 },
            intMap('column_sizes', 108, 117, 118, 'long'),
            intMap('value_counts', 109, 119, 120, 'long'),
            intMap('null_value_counts', 110, 121, 122, 'long'),
            intMap('nan_value_counts', 137, 138, 139, 'long'),
            intMap('lower_bounds', 125, 126, 127, 'bytes'),
            intMap('upper_bounds', 128, 129, 130, 'bytes'),
            optional('key_metadata', 'bytes', 131),
            optional('split_offsets', { type: 'array', items: 'long', 'element-id': 133 }, 132),
            optional('equality_ids', { type: 'array', items: 'int', 'element-id': 136 }, 135),
            optional('sort_order_id', 'int', 140),
          ],
        },
      },
    ],
  };
}

export const MANIFEST_LIST_SCHEMA: AvroSchemaJson = {
  type: 'record',
  name: 'manifest_file',
  fields: [
    { name: 'manifest_path', type: 'string', 'field-id': 500 },
    { name: 'manifest_length', type: 'long', 'field-id': 501 },
    { name: 'partition_spec_id', type: 'int', 'field-id': 502 },
    { name: 'content', type: 'int', 'field-id': 517 },
    { name: 'sequence_number', type: 'long', 'field-id': 515 },
    { name: 'min_sequence_number', type: 'long', 'field-id': 516 },
    { name: 'added_snapshot_id', type: 'long', 'field-id': 503 },
    { name: 'added_files_count', type: 'int', 'field-id': 504 },
    { name: 'existing_files_count', type: 'int', 'field-id': 505 },
    { name: 'deleted_files_count', type: 'int', 'field-id': 506 },
    { name: 'added_rows_count', type: 'long', 'field-id': 512 },
    { name: 'existing_rows_count', type: 'long', 'field-id': 513 },
    { name: 'deleted_rows_count', type: 'long', 'field-id': 514 },
    optional(
      'partitions',
      {
        type: 'array',
        'element-id': 508,
        items: {
          type: 'record',
          name: 'r508',
          fields: [
            { name: 'contains_null', type: 'boolean', 'field-id': 509 },
            optional('contains_nan', 'boolean', 518),
            optional('lower_bound', 'bytes', 510),
            optional('upper_bound', 'bytes', 511),
          ],
        },
      },
      507,
    ),
    optional('key_metadata', 'bytes', 519),
  ],
};

/** Iceberg single-value serialization of a partition bound. */
function serializeBound(value: string | number, type: PrimitiveResult): Buffer {
  if (type === 'string') return Buffer.from(String(value), 'utf8');
  if (type === 'int') {
    const b = Buffer.alloc(4);
    b.writeInt32LE(Number(value), 0);
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt(value), 0);
  return b;
}

function compareValues(a: string | number, b: string | number, type: PrimitiveResult): number {
  // Iceberg orders strings by their UTF-8 bytes (unsigned), not by UTF-16 code units.
  if (type === 'string') return Buffer.compare(Buffer.from(String(a), 'utf8'), Buffer.from(String(b), 'utf8'));
  return Number(a) - Number(b);
}

function summarize(entries: readonly DataFileEntry[], types: PrimitiveResult[]): FieldSummary[] {
  return types.map((type, i) => {
    let containsNull = false;
    let lo: string | number | undefined;
    let hi: string | number | undefined;
    for (const e of entries) {
      const v = e.partition[i];
      if (v === null || v === undefined) {
        containsNull = true;
        continue;
      }
      if (lo === undefined || compareValues(v, lo, type) < 0) lo = v;
      if (hi === undefined || compareValues(v, hi, type) > 0) hi = v;
    }
    return {
      contains_null: containsNull,
      contains_nan: false,
      lower_bound: lo === undefined ? null : serializeBound(lo, type),
      upper_bound: hi === undefined ? null : serializeBound(hi, type),
    };
  });
}

export interface ManifestWriteOptions {
  entries: readonly DataFileEntry[];
  schema: IcebergSchema;
  spec: PartitionSpec;
  snapshotId: bigint;
  sequenceNumber: bigint;
  metadataDir: string;
  /** Names the files of this commit, as pyiceberg does: `<commitUuid>-m<N>.avro`. */
  commitUuid: string;
  write: (uri: string, bytes: Buffer) => Promise<void>;
  maxEntriesPerManifest?: number;
}

/**
 * Writes the data manifests of one snapshot as entries arrive, each as soon as it is full, so a rebuild
 * holds at most one manifest's entries (with their column metrics) however many files the warehouse has.
 */
export class ManifestWriter {
  private readonly max: number;
  private readonly types: PrimitiveResult[];
  private readonly avroSchema: ReturnType<typeof manifestEntrySchema>;
  private readonly fieldNames: string[];
  private readonly meta: Record<string, string>;
  private pending: DataFileEntry[] = [];
  private readonly written: ManifestFileRecord[] = [];

  constructor(private readonly opts: Omit<ManifestWriteOptions, 'entries'>) {
    this.max = opts.maxEntriesPerManifest ?? MAX_ENTRIES_PER_MANIFEST;
    this.types = opts.spec.fields.map((f) => partitionResultType(f, opts.schema));
    this.avroSchema = manifestEntrySchema(opts.spec, opts.schema);
    this.fieldNames = opts.spec.fields.map((f) => avroName(f.name));
    this.meta = {
      schema: JSON.stringify(opts.schema),
      'schema-id': String(opts.schema['schema-id']),
      'partition-spec': JSON.stringify(opts.spec.fields),
      'partition-spec-id': String(opts.spec['spec-id']),
      'format-version': '2',
      content: 'data',
    };
  }

  async add(entry: DataFileEntry): Promise<void> {
    if (entry.partition.length !== this.types.length) {
      throw new Error(`partition of ${entry.path} has ${entry.partition.length} values, the spec ${this.types.length}`);
    }
    this.pending.push(entry);
    if (this.pending.length >= this.max) await this.flush();
  }

  /** Writes what is left and returns the manifest-list rows of every manifest, in order. */
  async finish(): Promise<ManifestFileRecord[]> {
    // An empty warehouse still gets one (empty) manifest: pyiceberg's inspect.files() fails on a snapshot without any.
    if (this.pending.length > 0 || this.written.length === 0) await this.flush();
    return this.written;
  }

  private async flush(): Promise<void> {
    const { opts } = this;
    const chunk = this.pending;
    this.pending = [];
    const records = chunk.map((e) => {
      const partition: Record<string, string | number | null> = {};
      this.fieldNames.forEach((name, i) => (partition[name] = e.partition[i] ?? null));
      return {
        status: 1,
        snapshot_id: opts.snapshotId,
        sequence_number: null,
        file_sequence_number: null,
        data_file: {
          content: 0,
          file_path: e.path,
          file_format: 'PARQUET',
          partition,
          record_count: BigInt(e.recordCount),
          file_size_in_bytes: BigInt(e.sizeBytes),
          column_sizes: avroIntMap(e.metrics?.columnSizes),
          value_counts: avroIntMap(e.metrics?.valueCounts),
          null_value_counts: avroIntMap(e.metrics?.nullValueCounts),
          nan_value_counts: null,
          lower_bounds: avroIntMap(e.metrics?.lowerBounds),
          upper_bounds: avroIntMap(e.metrics?.upperBounds),
          key_metadata: null,
          split_offsets: null,
          equality_ids: null,
          sort_order_id: null,
        },
      };
    });
    const bytes = encodeAvroFile(this.avroSchema, records, this.meta);
    const path = `${opts.metadataDir}/${opts.commitUuid}-m${this.written.length}.avro`;
    await opts.write(path, bytes);
    this.written.push({
      manifest_path: path,
      manifest_length: BigInt(bytes.length),
      partition_spec_id: opts.spec['spec-id'],
      content: 0,
      sequence_number: opts.sequenceNumber,
      min_sequence_number: opts.sequenceNumber,
      added_snapshot_id: opts.snapshotId,
      added_files_count: chunk.length,
      existing_files_count: 0,
      deleted_files_count: 0,
      added_rows_count: BigInt(chunk.reduce((s, e) => s + e.recordCount, 0)),
      existing_rows_count: 0n,
      deleted_rows_count: 0n,
      partitions: summarize(chunk, this.types),
      key_metadata: null,
    });
  }
}

/** Writes the data manifests of entries already in memory and returns their manifest-list rows. */
export async function writeManifests(opts: ManifestWriteOptions): Promise<ManifestFileRecord[]> {
  const writer = new ManifestWriter(opts);
  for (const entry of opts.entries) await writer.add(entry);
  return writer.finish();
}

/** Writes the manifest list `snap-<id>-0-<commitUuid>.avro` and returns its location. */
export async function writeManifestList(
  manifests: readonly ManifestFileRecord[],
  opts: { snapshotId: bigint; sequenceNumber: bigint; metadataDir: string; commitUuid: string; write: (uri: string, bytes: Buffer) => Promise<void> },
): Promise<string> {
  const bytes = encodeAvroFile(MANIFEST_LIST_SCHEMA, manifests, {
    'snapshot-id': opts.snapshotId.toString(),
    'parent-snapshot-id': 'null',
    'sequence-number': opts.sequenceNumber.toString(),
    'format-version': '2',
  });
  const path = `${opts.metadataDir}/snap-${opts.snapshotId}-0-${opts.commitUuid}.avro`;
  await opts.write(path, bytes);
  return path;
}

export function newCommitUuid(): string {
  return randomUUID();
}
