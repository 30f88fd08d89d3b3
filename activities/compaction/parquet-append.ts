/**
 * Joins Parquet files of one schema into one file by appending their row groups as they are: the
 * column chunks are copied byte for byte and one footer lists all row groups, so the rows are not
 * decoded or compressed again. The out-of-core write uses it for its sorted ranges: a concatenation
 * through DuckDB re-encodes everything, at about the cost of a second copy floor.
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
const RowGroup = { columns: 1, fileOffset: 5, ordinal: 7 } as const;
const ColumnChunk = { fileOffset: 2, metaData: 3, offsetIndexOffset: 4, columnIndexOffset: 6 } as const;
const ColumnMetaData = { dataPageOffset: 9, indexPageOffset: 10, dictionaryPageOffset: 11, bloomFilterOffset: 14 } as const;

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

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/**
 * Writes `outFile` holding the rows of `files` in list order, with exactly the key-value metadata `kv`.
 * Every file must have the same schema (checked).
 */
export async function appendParquetFiles(files: readonly string[], outFile: string, kv: readonly KvEntry[]): Promise<void> {
  if (files.length === 0) throw new Error('appendParquetFiles: no files');
  const out = await fs.open(outFile, 'w');
  try {
    await out.write(MAGIC);
    let position = MAGIC.length;
    let first: SourceFile | undefined;
    let firstSchema: Uint8Array | undefined;
    const rowGroups: TValue[] = [];
    let rows = 0n;
    const block = Buffer.alloc(COPY_BLOCK);
    for (const path of files) {
      const source = await readFooter(path);
      const schema = writeThriftStruct({ t: TType.struct, fields: [{ id: FileMetaData.schema, value: field(source.footer, FileMetaData.schema)! }] });
      if (!first) {
        first = source;
        firstSchema = schema;
      } else if (!sameBytes(schema, firstSchema!)) {
        throw new Error(`${path} has another schema than ${first.path}`);
      }
      const shift = BigInt(position - MAGIC.length);
      for (const item of asList(field(source.footer, FileMetaData.rowGroups), 'row groups')) {
        moveRowGroup(asStruct(item, 'row group'), shift, rowGroups.length, path);
        rowGroups.push(item);
      }
      rows += asI64(field(source.footer, FileMetaData.numRows)) ?? 0n;

      const input = await fs.open(path, 'r');
      try {
        for (let at = MAGIC.length; at < source.dataEnd; ) {
          const { bytesRead } = await input.read(block, 0, Math.min(COPY_BLOCK, source.dataEnd - at), at);
          if (bytesRead === 0) throw new Error(`${path} ended early`);
          await out.write(block, 0, bytesRead);
          at += bytesRead;
        }
      } finally {
        await input.close();
      }
      position += source.dataEnd - MAGIC.length;
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
