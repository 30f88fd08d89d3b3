/**
 * DuckDB types as DESCRIBE prints them (`STRUCT(href VARCHAR, "type" VARCHAR)[]`), parsed only as far as
 * comparing nested columns field by field needs: producers of STAC GeoParquet write the same struct with
 * its fields in another order, or with a field more, from one file to the next.
 */
export type DuckType =
  | { kind: 'struct'; fields: { name: string; type: DuckType }[] }
  | { kind: 'list'; element: DuckType }
  | { kind: 'array'; element: DuckType; size: string }
  | { kind: 'map'; key: DuckType; value: DuckType }
  /** Anything else, as printed (`TIMESTAMP WITH TIME ZONE`, `DECIMAL(18,3)`, a UNION). */
  | { kind: 'scalar'; name: string };

export function isNestedType(text: string): boolean {
  const type = tryParseDuckType(text);
  return type !== undefined && type.kind !== 'scalar';
}

/**
 * Undefined for text this parser does not know: a type DuckDB prints in a way not foreseen here is then
 * compared as a whole, as before nested columns were looked into, rather than failing the bucket.
 */
export function tryParseDuckType(text: string): DuckType | undefined {
  try {
    return parseDuckType(text);
  } catch {
    return undefined;
  }
}

/** Throws naming the text when it is not a type DESCRIBE prints. */
export function parseDuckType(text: string): DuckType {
  const parser = new TypeParser(text);
  const type = parser.type();
  if (!parser.atEnd()) throw new Error(`unexpected text at ${parser.at} in DuckDB type ${text}`);
  return type;
}

class TypeParser {
  at = 0;
  constructor(private readonly text: string) {}

  atEnd(): boolean {
    return this.at >= this.text.length;
  }

  type(): DuckType {
    let type: DuckType;
    if (this.text.startsWith('STRUCT(', this.at)) {
      this.at += 'STRUCT('.length;
      const fields: { name: string; type: DuckType }[] = [];
      for (;;) {
        const name = this.fieldName();
        this.expect(' ');
        fields.push({ name, type: this.type() });
        if (this.text[this.at] === ',') {
          this.at++;
          this.skipSpaces();
          continue;
        }
        this.expect(')');
        break;
      }
      type = { kind: 'struct', fields };
    } else if (this.text.startsWith('MAP(', this.at)) {
      this.at += 'MAP('.length;
      const key = this.type();
      this.expect(',');
      this.skipSpaces();
      const value = this.type();
      this.expect(')');
      type = { kind: 'map', key, value };
    } else {
      type = { kind: 'scalar', name: this.scalar() };
    }
    while (this.text[this.at] === '[') {
      const close = this.text.indexOf(']', this.at);
      if (close < 0) throw new Error(`unclosed '[' in DuckDB type ${this.text}`);
      const size = this.text.slice(this.at + 1, close);
      this.at = close + 1;
      type = size === '' ? { kind: 'list', element: type } : { kind: 'array', element: type, size };
    }
    return type;
  }

  /** A struct field's name: bare, or double-quoted with "" standing for one quote. */
  private fieldName(): string {
    if (this.text[this.at] !== '"') {
      const end = this.text.indexOf(' ', this.at);
      if (end < 0) throw new Error(`struct field without a type in DuckDB type ${this.text}`);
      const name = this.text.slice(this.at, end);
      this.at = end;
      return name;
    }
    let name = '';
    for (this.at++; this.at < this.text.length; this.at++) {
      const c = this.text[this.at]!;
      if (c !== '"') {
        name += c;
      } else if (this.text[this.at + 1] === '"') {
        name += '"';
        this.at++;
      } else {
        this.at++;
        return name;
      }
    }
    throw new Error(`unclosed quoted name in DuckDB type ${this.text}`);
  }

  /** Up to the ',', ')' or '[' that ends it outside parentheses and quotes. */
  private scalar(): string {
    const start = this.at;
    let depth = 0;
    for (; this.at < this.text.length; this.at++) {
      const c = this.text[this.at]!;
      if (c === "'") {
        const close = this.text.indexOf("'", this.at + 1);
        if (close < 0) break;
        this.at = close;
      } else if (c === '(') depth++;
      else if (c === ')' && depth > 0) depth--;
      else if (depth === 0 && (c === ',' || c === ')' || c === '[')) break;
    }
    if (this.at === start) throw new Error(`missing type at ${start} in DuckDB type ${this.text}`);
    return this.text.slice(start, this.at);
  }

  private expect(c: string): void {
    if (this.text[this.at] !== c) throw new Error(`expected '${c}' at ${this.at} in DuckDB type ${this.text}`);
    this.at++;
  }

  private skipSpaces(): void {
    while (this.text[this.at] === ' ') this.at++;
  }
}

/** The type as DuckDB's SQL reads it back (every field name quoted). */
export function formatDuckType(type: DuckType): string {
  switch (type.kind) {
    case 'struct':
      return `STRUCT(${type.fields.map((f) => `"${f.name.replace(/"/g, '""')}" ${formatDuckType(f.type)}`).join(', ')})`;
    case 'list':
      return `${formatDuckType(type.element)}[]`;
    case 'array':
      return `${formatDuckType(type.element)}[${type.size}]`;
    case 'map':
      return `MAP(${formatDuckType(type.key)}, ${formatDuckType(type.value)})`;
    case 'scalar':
      return type.name;
  }
}
