/**
 * A lossless reader and writer of Thrift's compact protocol, generic over field ids: a Parquet footer
 * read with it and written back is byte-for-byte the same, so fields this project does not know (new
 * statistics, encryption, geospatial stats) survive when a few known ones are changed.
 */

export const TType = {
  true: 1,
  false: 2,
  byte: 3,
  i16: 4,
  i32: 5,
  i64: 6,
  double: 7,
  binary: 8,
  list: 9,
  set: 10,
  map: 11,
  struct: 12,
} as const;

export type TValue =
  | { t: 1 | 2 }
  | { t: 3 | 4 | 5; v: number }
  | { t: 6; v: bigint }
  | { t: 7; v: Uint8Array }
  | { t: 8; v: Uint8Array }
  | { t: 9 | 10; elem: number; items: TValue[] }
  | { t: 11; key: number; value: number; entries: [TValue, TValue][] }
  | { t: 12; fields: TField[] };

export interface TField {
  id: number;
  value: TValue;
}

export type TStruct = Extract<TValue, { t: 12 }>;

class Reader {
  pos = 0;
  constructor(private readonly buf: Uint8Array) {}

  byte(): number {
    if (this.pos >= this.buf.length) throw new Error('thrift: unexpected end of data');
    return this.buf[this.pos++]!;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = this.byte();
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new Error('thrift: varint too long');
    }
  }

  zigzag(): bigint {
    const n = this.varint();
    return (n >> 1n) ^ -(n & 1n);
  }

  bytes(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) throw new Error('thrift: unexpected end of data');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** One value of a container element or a field, by its type. */
  value(t: number): TValue {
    switch (t) {
      case TType.true:
      case TType.false:
        return { t };
      case TType.byte:
        return { t, v: this.byte() };
      case TType.i16:
      case TType.i32:
        return { t, v: Number(this.zigzag()) };
      case TType.i64:
        return { t, v: this.zigzag() };
      case TType.double:
        return { t, v: this.bytes(8) };
      case TType.binary:
        return { t, v: this.bytes(Number(this.varint())) };
      case TType.list:
      case TType.set: {
        const header = this.byte();
        const elem = header & 0x0f;
        const size = header >> 4 === 0x0f ? Number(this.varint()) : header >> 4;
        const items: TValue[] = [];
        // Booleans inside containers are one byte each (1 true, 2 false).
        for (let i = 0; i < size; i++) items.push(elem === TType.true || elem === TType.false ? { t: this.byte() === 1 ? 1 : 2 } : this.value(elem));
        return { t, elem, items };
      }
      case TType.map: {
        const size = Number(this.varint());
        const kinds = size > 0 ? this.byte() : 0;
        const key = kinds >> 4;
        const value = kinds & 0x0f;
        const entries: [TValue, TValue][] = [];
        for (let i = 0; i < size; i++) entries.push([this.value(key), this.value(value)]);
        return { t, key, value, entries };
      }
      case TType.struct:
        return this.struct();
      default:
        throw new Error(`thrift: unknown type ${t} at byte ${this.pos}`);
    }
  }

  struct(): TStruct {
    const fields: TField[] = [];
    let last = 0;
    for (;;) {
      const header = this.byte();
      if (header === 0) return { t: TType.struct, fields };
      const delta = header >> 4;
      const id = delta === 0 ? Number(this.zigzag()) : last + delta;
      fields.push({ id, value: this.value(header & 0x0f) });
      last = id;
    }
  }
}

class Writer {
  private chunks: number[] = [];

  byte(b: number): void {
    this.chunks.push(b & 0xff);
  }

  varint(n: bigint): void {
    let v = n;
    while (v >= 0x80n) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }

  zigzag(n: bigint): void {
    this.varint(BigInt.asUintN(64, (n << 1n) ^ (n >> 63n)));
  }

  bytes(b: Uint8Array): void {
    for (const x of b) this.chunks.push(x);
  }

  value(v: TValue): void {
    switch (v.t) {
      case TType.true:
      case TType.false:
        return;
      case TType.byte:
        return this.byte(v.v);
      case TType.i16:
      case TType.i32:
        return this.zigzag(BigInt(v.v));
      case TType.i64:
        return this.zigzag(v.v);
      case TType.double:
        return this.bytes(v.v);
      case TType.binary:
        this.varint(BigInt(v.v.length));
        return this.bytes(v.v);
      case TType.list:
      case TType.set:
        if (v.items.length < 15) this.byte((v.items.length << 4) | v.elem);
        else {
          this.byte(0xf0 | v.elem);
          this.varint(BigInt(v.items.length));
        }
        for (const item of v.items) {
          if (item.t === TType.true || item.t === TType.false) this.byte(item.t);
          else this.value(item);
        }
        return;
      case TType.map:
        this.varint(BigInt(v.entries.length));
        if (v.entries.length) this.byte((v.key << 4) | v.value);
        for (const [k, x] of v.entries) {
          this.value(k);
          this.value(x);
        }
        return;
      case TType.struct:
        return this.struct(v);
    }
  }

  struct(s: TStruct): void {
    let last = 0;
    for (const f of s.fields) {
      const delta = f.id - last;
      if (delta > 0 && delta <= 15) this.byte((delta << 4) | f.value.t);
      else {
        this.byte(f.value.t);
        this.zigzag(BigInt(f.id));
      }
      this.value(f.value);
      last = f.id;
    }
    this.byte(0);
  }

  result(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

/** Decodes one struct; `bytes` must hold exactly it. */
export function readThriftStruct(bytes: Uint8Array): TStruct {
  const r = new Reader(bytes);
  const s = r.struct();
  if (r.pos !== bytes.length) throw new Error(`thrift: ${bytes.length - r.pos} trailing bytes after the struct`);
  return s;
}

export function writeThriftStruct(s: TStruct): Uint8Array {
  const w = new Writer();
  w.struct(s);
  return w.result();
}

/** The field with this id, if present. */
export function field(s: TStruct, id: number): TValue | undefined {
  return s.fields.find((f) => f.id === id)?.value;
}

/** Sets (or adds, keeping ids ascending) a field. */
export function setField(s: TStruct, id: number, value: TValue): void {
  const i = s.fields.findIndex((f) => f.id >= id);
  if (i >= 0 && s.fields[i]!.id === id) s.fields[i] = { id, value };
  else if (i >= 0) s.fields.splice(i, 0, { id, value });
  else s.fields.push({ id, value });
}

export function removeField(s: TStruct, id: number): void {
  const i = s.fields.findIndex((f) => f.id === id);
  if (i >= 0) s.fields.splice(i, 1);
}
