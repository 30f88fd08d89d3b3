/**
 * Avro object container files (the format of Iceberg manifests and manifest lists), written and read
 * in memory. The header carries the schema JSON exactly as given: Iceberg readers resolve fields by the
 * `field-id` attributes, which a parsed avsc Type would not reproduce.
 */
import { randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import * as avro from 'avsc';

/** Avro longs as BigInt: snapshot ids are 63-bit and JavaScript numbers are exact only up to 2^53. */
export const bigintLong = avro.types.LongType.__with({
  fromBuffer: (buf: Buffer) => buf.readBigInt64LE(0),
  toBuffer: (n: bigint) => {
    const buf = Buffer.alloc(8);
    buf.writeBigInt64LE(n, 0);
    return buf;
  },
  fromJSON: (json: unknown) => BigInt(json as string | number),
  toJSON: (n: bigint) => Number(n),
  isValid: (n: unknown) => typeof n === 'bigint',
  compare: (a: bigint, b: bigint) => (a === b ? 0 : a < b ? -1 : 1),
});

/** A JSON Avro schema, kept as plain data so that every attribute (field-id, element-id ...) survives. */
export type AvroSchemaJson = Record<string, unknown>;

const MAGIC = Buffer.from([0x4f, 0x62, 0x6a, 0x01]);
const metaType = avro.Type.forSchema({ type: 'map', values: 'bytes' });
const plainLong = avro.Type.forSchema('long');
const RECORDS_PER_BLOCK = 1000;

function typeFor(schema: AvroSchemaJson): avro.Type {
  return avro.Type.forSchema(schema as avro.Schema, { registry: { long: bigintLong } });
}

/** Encodes records (longs as bigint) into a deflate-compressed Avro container file. */
export function encodeAvroFile(schema: AvroSchemaJson, records: readonly unknown[], meta: Record<string, string>): Buffer {
  const type = typeFor(schema);
  const sync = randomBytes(16);
  const headerMeta: Record<string, Buffer> = {
    'avro.schema': Buffer.from(JSON.stringify(schema), 'utf8'),
    'avro.codec': Buffer.from('deflate', 'utf8'),
  };
  for (const [k, v] of Object.entries(meta)) headerMeta[k] = Buffer.from(v, 'utf8');
  const parts: Buffer[] = [MAGIC, metaType.toBuffer(headerMeta), sync];
  for (let i = 0; i < records.length; i += RECORDS_PER_BLOCK) {
    const block = records.slice(i, i + RECORDS_PER_BLOCK);
    const raw = Buffer.concat(block.map((r) => type.toBuffer(r)));
    const data = deflateRawSync(raw);
    parts.push(plainLong.toBuffer(block.length), plainLong.toBuffer(data.length), data, sync);
  }
  return Buffer.concat(parts);
}

export interface DecodedAvroFile {
  schema: AvroSchemaJson;
  meta: Record<string, string>;
  records: unknown[];
}

/** Decodes a whole container file (codecs null and deflate); `name` only labels errors. */
export function decodeAvroFile(bytes: Buffer, name: string): DecodedAvroFile {
  if (bytes.length < 4 || !bytes.subarray(0, 4).equals(MAGIC)) throw new Error(`${name} is not an Avro file (bad magic)`);
  try {
    const header = metaType.decode(bytes, 4);
    if (header.offset < 0) throw new Error('truncated header');
    const rawMeta = header.value as Record<string, Buffer>;
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(rawMeta)) meta[k] = v.toString('utf8');
    const schemaText = meta['avro.schema'];
    if (!schemaText) throw new Error('no avro.schema in header');
    const schema = JSON.parse(schemaText) as AvroSchemaJson;
    const codec = meta['avro.codec'] ?? 'null';
    if (codec !== 'null' && codec !== 'deflate') throw new Error(`unsupported Avro codec ${codec}`);
    const type = typeFor(schema);
    let pos = header.offset;
    const sync = bytes.subarray(pos, pos + 16);
    pos += 16;
    const records: unknown[] = [];
    while (pos < bytes.length) {
      const count = plainLong.decode(bytes, pos);
      if (count.offset < 0) throw new Error('truncated block header');
      const size = plainLong.decode(bytes, count.offset);
      if (size.offset < 0) throw new Error('truncated block header');
      const start = size.offset;
      const end = start + (size.value as number);
      if (end + 16 > bytes.length) throw new Error('truncated block');
      const data = codec === 'deflate' ? inflateRawSync(bytes.subarray(start, end)) : bytes.subarray(start, end);
      if (!bytes.subarray(end, end + 16).equals(sync)) throw new Error('sync marker mismatch');
      let off = 0;
      for (let i = 0; i < (count.value as number); i++) {
        const rec = type.decode(data, off);
        if (rec.offset < 0) throw new Error('truncated record');
        records.push(rec.value);
        off = rec.offset;
      }
      pos = end + 16;
    }
    return { schema, meta, records };
  } catch (err) {
    throw new Error(`cannot decode Avro file ${name}: ${(err as Error).message}`);
  }
}
