"""Rewrites a Parquet file with one column, or one part of a nested column, replaced by pyarrow's Null type,
which is how pyarrow writes a column or struct field that was None in every row of a batch (no explicit
schema). The part is a dotted path: `col`, `col.field` for a struct field, `col.element.field` within a
list's elements. Key-value metadata is kept."""
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def nulled(array: pa.Array, path: list[str]) -> pa.Array:
    if not path:
        return pa.nulls(len(array), pa.null())
    step, rest = path[0], path[1:]
    if pa.types.is_list(array.type):
        if step != "element":
            raise SystemExit(f"a list's step is 'element', not {step!r}")
        return pa.ListArray.from_arrays(array.offsets, nulled(array.values, rest), mask=array.is_null())
    if pa.types.is_struct(array.type):
        names = [f.name for f in array.type]
        if step not in names:
            raise SystemExit(f"no struct field {step!r} among {names}")
        children = [nulled(array.field(i), rest) if name == step else array.field(i) for i, name in enumerate(names)]
        return pa.StructArray.from_arrays(children, names=names, mask=array.is_null())
    raise SystemExit(f"cannot step into {array.type} with {step!r}")


def main() -> None:
    path, column = sys.argv[1], sys.argv[2]
    top, *rest = column.split(".")
    table = pq.read_table(path)
    index = table.schema.get_field_index(top)
    values = nulled(table.column(index).combine_chunks(), rest)
    table = table.set_column(index, pa.field(top, values.type), values)
    table = table.replace_schema_metadata(pq.read_schema(path).metadata)
    pq.write_table(table, path)


if __name__ == "__main__":
    main()
