"""Rewrites a Parquet file with one column replaced by pyarrow's Null type, which is how pyarrow writes
a column that was None in every row of a batch (no explicit schema). Key-value metadata is kept."""
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    path, column = sys.argv[1], sys.argv[2]
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    table = table.set_column(index, pa.field(column, pa.null()), pa.nulls(table.num_rows, pa.null()))
    table = table.replace_schema_metadata(pq.read_schema(path).metadata)
    pq.write_table(table, path)


if __name__ == "__main__":
    main()
