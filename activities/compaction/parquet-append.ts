/**
 * Joins Parquet files of one schema into one file by appending their row groups as they are: the
 * column chunks are copied byte for byte and one footer lists all row groups, so the rows are not
 * decoded or compressed again. The out-of-core write uses it for its sorted ranges: a concatenation
 * through DuckDB re-encodes everything, at about the cost of a second copy floor. It also takes a run
 * of row groups out of a file (last week's output, where nothing changed in them): their bytes are one
 * span, and their bloom filters, which DuckDB writes elsewhere in the file, are copied one by one.
 *
 * Only the offsets a footer holds are moved (row group, data, dictionary, index and bloom filter
 * offsets). A file with a page index is refused: its offset index holds absolute page offsets inside
 * the copied bytes (DuckDB 1.5 writes none; a newer DuckDB that does fails loudly in the tests).
 */
import { promises as fs } from 'node:fs';
import type { KvEntry } from './output-metadata';
import { field, readThriftStruct, removeField, setField, TType, writeThriftStruct, type TStruct, type TValue } from './thrift-compact';

const MAGIC = Buffer.from('PAR1');
const COPY_BLOCK = 8 * 1024 * 1024;

// Field ids of parquet.thrift.
const FileMetaData = { schema: 2, numRows: 3, rowGroups: 4, keyValueMetadata: 5 } as const;
const RowGroup = { columns: 1, numRows: 3, fileOffset: 5, ordinal: 7 } as const;
const ColumnChunk = { fileOffset: 2, metaData: 3, offsetIndexOffset: 4, columnIndexOffset: 6 } as const;
const ColumnMetaData = { dataPageOffset: 9, indexPageOffset: 10, dictionaryPageOffset: 11, bloomFilterOffset: 14 } as const;
const TOTAL_COMPRESSED_SIZE = 7;
const BLOOM_FILTER_LENGTH = 15;

/** Row groups [from, to) of a file, appended without the rest of it. */
export interface RowGroupRun {
  path: string;
  from: number;
  to: number;
}

/** A whole file, or a run of its row groups. */
export type AppendPart = string | RowGroupRun;

interface SourceFile {
  path: string;
  footer: TStruct;
  /** End of the row groups (and bloom filters): where the footer starts. */
  dataEnd: number;
}

async function readFooter(path: string): Promise<SourceFile> {
  const handle = await fs.open(path, 'r');
  try {
    const { size } = await handle.stat();
    const tail = Buffer.alloc(8);
    if (size < 12) throw new Error(`${path} is too short to be a Parquet file`);
    await handle.read(tail, 0, 8, size - 8);
    if (!tail.subarray(4).equals(MAGIC)) throw new Error(`${path} does not end with the Parquet magic`);
    const length = tail.readUInt32LE(0);
    const dataEnd = size - 8 - length;
    if (dataEnd < 4) throw new Error(`${path} has a footer longer than the file`);
    const bytes = Buffer.alloc(length);
    await handle.read(bytes, 0, length, dataEnd);
    return { path, footer: readThriftStruct(bytes), dataEnd };
  } finally {
    await handle.close();
  }
}

function asStruct(v: TValue | undefined, what: string): TStruct {
  if (v?.t !== TType.struct) throw new Error(`Parquet footer: ${what} is not a struct`);
  return v;
}

function asList(v: TValue | undefined, what: string): TValue[] {
  if (v?.t !== TType.list) throw new Error(`Parquet footer: ${what} is not a list`);
  return v.items;
}

function asI64(v: TValue | undefined): bigint | undefined {
  return v?.t === TType.i64 ? v.v : undefined;
}

/** Adds `shift` to an i64 offset field when present (0 means "not set" for ColumnChunk.file_offset). */
function shiftOffset(s: TStruct, id: number, shift: bigint): void {
  const v = asI64(field(s, id));
  if (v !== undefined && v > 0n) setField(s, id, { t: TType.i64, v: v + shift });
}

function columnChunks(rowGroup: TStruct): TStruct[] {
  return asList(field(rowGroup, RowGroup.columns), 'row group columns').map((c) => asStruct(c, 'column chunk'));
}

function chunkMeta(chunk: TStruct): TStruct | undefined {
  const meta = field(chunk, ColumnChunk.metaData);
  return meta ? asStruct(meta, 'column metadata') : undefined;
}

/** The bytes of a row group's column chunks: one span, as every writer lays them out. */
function rowGroupSpan(rowGroup: TStruct, file: string): { start: bigint; end: bigint } {
  let start: bigint | undefined;
  let end: bigint | undefined;
  for (const chunk of columnChunks(rowGroup)) {
    const m = chunkMeta(chunk);
    const first = m && (asI64(field(m, ColumnMetaData.dictionaryPageOffset)) ?? asI64(field(m, ColumnMetaData.dataPageOffset)));
    const size = m && asI64(field(m, TOTAL_COMPRESSED_SIZE));
    if (first === undefined || size === undefined) throw new Error(`${file}: a column chunk without page offsets or size`);
    if (start === undefined || first < start) start = first;
    if (end === undefined || first + size > end) end = first + size;
  }
  if (start === undefined || end === undefined) throw new Error(`${file}: a row group without columns`);
  return { start, end };
}

function moveRowGroup(rowGroup: TStruct, shift: bigint, ordinal: number, file: string): void {
  shiftOffset(rowGroup, RowGroup.fileOffset, shift);
  if (field(rowGroup, RowGroup.ordinal)) setField(rowGroup, RowGroup.ordinal, { t: TType.i16, v: ordinal });
  for (const item of asList(field(rowGroup, RowGroup.columns), 'row group columns')) {
    const chunk = asStruct(item, 'column chunk');
    if (field(chunk, ColumnChunk.offsetIndexOffset) || field(chunk, ColumnChunk.columnIndexOffset)) {
      throw new Error(`${file} has a page index, which cannot be moved without rewriting it`);
    }
    shiftOffset(chunk, ColumnChunk.fileOffset, shift);
    const meta = field(chunk, ColumnChunk.metaData);
    if (!meta) continue;
    const m = asStruct(meta, 'column metadata');
    for (const id of Object.values(ColumnMetaData)) shiftOffset(m, id, shift);
  }
}

function schemaBytes(source: SourceFile): Uint8Array {
  return writeThriftStruct({ t: TType.struct, fields: [{ id: FileMetaData.schema, value: field(source.footer, FileMetaData.schema)! }] });
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

async function copyRange(input: fs.FileHandle, out: fs.FileHandle, block: Buffer, from: number, to: number, path: string): Promise<void> {
  for (let at = from; at < to; ) {
    const { bytesRead } = await input.read(block, 0, Math.min(COPY_BLOCK, to - at), at);
    if (bytesRead === 0) throw new Error(`${path} ended early`);
    await out.write(block, 0, bytesRead);
    at += bytesRead;
  }
}

/**
 * Writes `outFile` holding the rows of `parts` in list order, with exactly the key-value metadata `kv`.
 * Every file must have the same schema (checked).
 */
export async function appendParquetFiles(parts: readonly AppendPart[], outFile: string, kv: readonly KvEntry[]): Promise<void> {
  if (parts.length === 0) throw new Error('appendParquetFiles: no files');
  try {
    await appendInto(parts, outFile, kv);
  } catch (err) {
    // The system's own message ("ENOSPC: no space left on device, write") names no file: which
    // filesystem filled up is what the operator needs to know.
    const syscall = (err as NodeJS.ErrnoException).syscall;
    if (syscall === 'write') throw new Error(`cannot write ${outFile}: ${(err as Error).message}`);
    throw err;
  }
}

async function appendInto(parts: readonly AppendPart[], outFile: string, kv: readonly KvEntry[]): Promise<void> {
  const out = await fs.open(outFile, 'w');
  try {
    await out.write(MAGIC);
    let position = MAGIC.length;
    let first: SourceFile | undefined;
    let firstSchema: Uint8Array | undefined;
    const rowGroups: TValue[] = [];
    let rows = 0n;
    const block = Buffer.alloc(COPY_BLOCK);
    // A file's footer is read and its schema checked once however many runs come from it (each run
    // moves its own row groups).
    const footers = new Map<string, SourceFile>();
    for (const part of parts) {
      const path = typeof part === 'string' ? part : part.path;
      let source = footers.get(path);
      if (!source) {
        source = await readFooter(path);
        footers.set(path, source);
        const schema = schemaBytes(source);
        if (!first) {
          first = source;
          firstSchema = schema;
        } else if (!sameBytes(schema, firstSchema!)) {
          throw new Error(`${path} has another schema than ${first.path}`);
        }
      }
      const all = asList(field(source.footer, FileMetaData.rowGroups), 'row groups');
      const input = await fs.open(path, 'r');
      try {
        if (typeof part === 'string') {
          const shift = BigInt(position - MAGIC.length);
          for (const item of all) {
            moveRowGroup(asStruct(item, 'row group'), shift, rowGroups.length, path);
            rowGroups.push(item);
          }
          rows += asI64(field(source.footer, FileMetaData.numRows)) ?? 0n;
          await copyRange(input, out, block, MAGIC.length, source.dataEnd, path);
          position += source.dataEnd - MAGIC.length;
          continue;
        }
        if (part.from < 0 || part.to > all.length || part.from >= part.to) {
          throw new Error(`${path} has ${all.length} row groups; cannot take [${part.from}, ${part.to})`);
        }
        for (const item of all.slice(part.from, part.to)) {
          const rowGroup = asStruct(item, 'row group');
          const span = rowGroupSpan(rowGroup, path);
          const blooms = columnChunks(rowGroup).flatMap((chunk) => {
            const m = chunkMeta(chunk);
            const offset = m && asI64(field(m, ColumnMetaData.bloomFilterOffset));
            if (!m || offset === undefined) return [];
            const length = field(m, BLOOM_FILTER_LENGTH);
            // Without its length a filter cannot be copied; readers do without one.
            if (length?.t !== TType.i32) {
              removeField(m, ColumnMetaData.bloomFilterOffset);
              return [];
            }
            return [{ meta: m, offset: Number(offset), length: length.v }];
          });
          moveRowGroup(rowGroup, BigInt(position) - span.start, rowGroups.length, path);
          rowGroups.push(item);
          rows += asI64(field(rowGroup, RowGroup.numRows)) ?? 0n;
          await copyRange(input, out, block, Number(span.start), Number(span.end), path);
          position += Number(span.end - span.start);
          for (const bloom of blooms) {
            setField(bloom.meta, ColumnMetaData.bloomFilterOffset, { t: TType.i64, v: BigInt(position) });
            await copyRange(input, out, block, bloom.offset, bloom.offset + bloom.length, path);
            position += bloom.length;
          }
        }
      } finally {
        await input.close();
      }
    }

    const footer = first!.footer;
    setField(footer, FileMetaData.numRows, { t: TType.i64, v: rows });
    setField(footer, FileMetaData.rowGroups, { t: TType.list, elem: TType.struct, items: rowGroups });
    if (kv.length) {
      const entries: TValue[] = kv.map((e) => ({
        t: TType.struct,
        fields: [
          { id: 1, value: { t: TType.binary, v: Buffer.from(e.key, 'utf8') } },
          { id: 2, value: { t: TType.binary, v: e.value } },
        ],
      }));
      setField(footer, FileMetaData.keyValueMetadata, { t: TType.list, elem: TType.struct, items: entries });
    } else {
      removeField(footer, FileMetaData.keyValueMetadata);
    }
    const bytes = writeThriftStruct(footer);
    const length = Buffer.alloc(4);
    length.writeUInt32LE(bytes.length, 0);
    await out.write(bytes);
    await out.write(length);
    await out.write(MAGIC);
  } finally {
    await out.close();
  }
}

/** Whether two Parquet files have byte-identical schemas (what appendParquetFiles requires). */
export async function sameParquetSchema(a: string, b: string): Promise<boolean> {
  return sameBytes(schemaBytes(await readFooter(a)), schemaBytes(await readFooter(b)));
}
