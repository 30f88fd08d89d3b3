"""Reads a Parquet file with pyarrow (an independent reader) and prints what the tests compare, as JSON:
row count, row groups, key-value metadata, the `id` column in file order, and the row count of a
filter that pyarrow may answer with statistics and bloom filters."""
import json
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq


def main() -> None:
    path, column, value = sys.argv[1], sys.argv[2], sys.argv[3]
    f = pq.ParquetFile(path)
    md = f.metadata
    table = f.read()
    filtered = pq.read_table(path, filters=[(column, "=", value)])
    kv = {k.decode(): v.decode() for k, v in (md.metadata or {}).items()}
    print(json.dumps({
        "rows": md.num_rows,
        "row_groups": [md.row_group(i).num_rows for i in range(md.num_row_groups)],
        "kv": kv,
        "ids": [str(x) for x in table.column("id").to_pylist()],
        "filtered": filtered.num_rows,
        "expected_filtered": int(pc.sum(pc.equal(table.column(column), value)).as_py() or 0),
    }))


if __name__ == "__main__":
    main()
