"""Rewrites a Parquet file with a copy of one column appended under another name, kept as given even when
it matches an existing name case-insensitively (`ID` beside `id`), as pyarrow allows and DuckDB does not.
Key-value metadata is kept."""
import sys

import pyarrow.parquet as pq


def main() -> None:
    path, column, name = sys.argv[1], sys.argv[2], sys.argv[3]
    table = pq.read_table(path)
    table = table.append_column(name, table.column(column))
    table = table.replace_schema_metadata(pq.read_schema(path).metadata)
    pq.write_table(table, path)


if __name__ == "__main__":
    main()
