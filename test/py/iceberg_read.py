#!/usr/bin/env python3
"""Independent reader of the Iceberg table through pyiceberg's SqlCatalog (test tooling).

    iceberg_read.py scan --catalog /abs/catalog.db [--name earthcatalog] [--table earthcatalog.stac_items]
                         [--warehouse /abs/dir] [--select id,datetime] [--filter "datetime >= '2020-01-01T00:00:00+00:00'"]
                         [--ids] [--files-only] [--metrics]
        Loads the table, scans it and prints one JSON object:
        snapshot_count, current_snapshot_id, metadata_location, metadata_log (files), schema_fields [[id, name]],
        spec {spec_id, fields [[field_id, name, transform, source_id]]}, properties, file_count, files
        [{path, record_count, size, partition}], row_count (rows scanned), partitions (distinct partition values of
        the scanned files) and, with --ids, the sorted "cell/id" of every scanned row. With --metrics every file
        also has "metrics": pyiceberg's readable_metrics per column (bounds decoded by pyiceberg; timestamps
        as microseconds since the epoch, bytes as hex).

    iceberg_read.py register --catalog /abs/catalog.db [--name earthcatalog] [--table earthcatalog.stac_items]
                             --metadata <location as the catalog row should store it>
        Registers existing table metadata (as the Python pipeline left it), creating the namespace first.
        Relative locations resolve against the working directory, as they did for the pipeline.

    iceberg_read.py add-files --catalog /abs/catalog.db [--name ...] [--table ...] --files /abs/a.parquet,/abs/b.parquet
        Appends existing Parquet files in a new snapshot (pyiceberg's add_files, a fast append: the
        Python pipeline's kind of commit between two compactions). Prints {"metadata_location": ...}.

    iceberg_read.py delete --catalog /abs/catalog.db [--name ...] [--table ...] --filter EXPR
        Deletes rows through the table (pyiceberg: whole files where the filter covers them, else copy-on-write).
        Prints {"metadata_location": ...}.

    iceberg_read.py rename-column --catalog /abs/catalog.db [--name ...] [--table ...] --from OLD --to NEW
        Renames a top-level column (pyiceberg keeps the old name as an alias in the name mapping).
        Prints {"metadata_location": ..., "name_mapping": ...}.

    iceberg_read.py set-properties --catalog /abs/catalog.db [--name ...] [--table ...] --set key=value [--set ...]
        Commits new table properties (no new snapshot). Prints {"metadata_location": ...}.

    iceberg_read.py create-tag --catalog /abs/catalog.db [--name ...] [--table ...] --tag NAME [--tag NAME ...]
        Tags the current snapshot (an audit tag, say). Prints {"metadata_location": ..., "snapshot_id": ...}.

Exit status 2 with {"error": ..., "type": ...} on stdout when the catalog or table cannot be read.
"""
import argparse
import json
import os
import sys


def catalog_for(args):
    from pyiceberg.catalog.sql import SqlCatalog

    props = {"uri": f"sqlite:///{args.catalog}"}
    if args.warehouse:
        props["warehouse"] = f"file://{args.warehouse}"
    return SqlCatalog(args.name, **props)


def jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def metric_value(value):
    import datetime

    if isinstance(value, datetime.datetime):
        epoch = datetime.datetime(1970, 1, 1, tzinfo=value.tzinfo)
        return (value - epoch) // datetime.timedelta(microseconds=1)
    return jsonable(value)


def readable_metrics(f):
    metrics = f.get("readable_metrics") or {}
    return {
        col: {k: metric_value(v) for k, v in m.items()} for col, m in metrics.items() if m is not None
    }


def partition_of(data_file, spec):
    return {f.name: jsonable(data_file.partition[i]) for i, f in enumerate(spec.fields)}


def scan(args):
    catalog = catalog_for(args)
    table = catalog.load_table(args.table)
    meta = table.metadata
    spec = table.spec()
    current = table.current_snapshot()
    select = tuple(args.select.split(",")) if args.select else ("*",)
    if args.ids and select != ("*",):
        select = tuple(dict.fromkeys(select + ("id", "grid_partition")))
    tscan = table.scan(row_filter=args.filter, selected_fields=select) if args.filter else table.scan(selected_fields=select)
    tasks = list(tscan.plan_files())
    arrow = None if args.files_only else tscan.to_arrow()
    files_table = table.inspect.files().to_pylist()
    out = {
        "snapshot_count": len(meta.snapshots),
        "current_snapshot_id": str(current.snapshot_id) if current else None,
        "metadata_location": table.metadata_location,
        "metadata_log": [entry.metadata_file for entry in meta.metadata_log],
        "schema_fields": [[f.field_id, f.name] for f in table.schema().fields],
        "schema_types": {f.name: str(f.field_type) for f in table.schema().fields},
        "spec": {
            "spec_id": spec.spec_id,
            "fields": [[f.field_id, f.name, str(f.transform), f.source_id] for f in spec.fields],
        },
        "properties": dict(meta.properties),
        "file_count": len(files_table),
        "files": [
            {
                "path": f["file_path"],
                "record_count": f["record_count"],
                "size": f["file_size_in_bytes"],
                "partition": {k: jsonable(v) for k, v in (f["partition"] or {}).items()},
                **({"metrics": readable_metrics(f)} if getattr(args, "metrics", False) else {}),
            }
            for f in files_table
        ],
        "scanned_files": len(tasks),
        "row_count": None if arrow is None else arrow.num_rows,
        "partitions": [json.loads(p) for p in sorted({json.dumps(partition_of(t.file, spec), default=str) for t in tasks})],
    }
    if getattr(args, "values", None) and arrow is not None:
        ids = arrow.column("id").to_pylist()
        values = arrow.column(args.values).to_pylist()
        out["values"] = {i: (None if v is None else json.dumps(v, default=str, sort_keys=True)) for i, v in zip(ids, values)}
    if args.ids and arrow is not None:
        ids = arrow.column("id").to_pylist()
        cells = arrow.column("grid_partition").to_pylist()
        out["ids"] = sorted(f"{c}/{i}" for c, i in zip(cells, ids))
    print(json.dumps(out, default=str))


def register(args):
    catalog = catalog_for(args)
    namespace = args.table.rsplit(".", 1)[0]
    if not catalog.namespace_exists(namespace):
        catalog.create_namespace(namespace)
    table = catalog.register_table(args.table, args.metadata)
    print(json.dumps({"metadata_location": table.metadata_location}))


def add_files(args):
    table = catalog_for(args).load_table(args.table)
    table.add_files(file_paths=args.files.split(","))
    print(json.dumps({"metadata_location": table.metadata_location}))


def set_properties(args):
    table = catalog_for(args).load_table(args.table)
    with table.transaction() as tx:
        tx.set_properties(dict(kv.split("=", 1) for kv in args.set))
    print(json.dumps({"metadata_location": table.metadata_location}))


def create_tag(args):
    table = catalog_for(args).load_table(args.table)
    snapshot_id = table.current_snapshot().snapshot_id
    manage = table.manage_snapshots()
    for tag in args.tag:
        manage = manage.create_tag(snapshot_id, tag)
    manage.commit()
    print(json.dumps({"metadata_location": table.metadata_location, "snapshot_id": str(snapshot_id)}))


def set_statistics(args):
    """Registers an existing file as the current snapshot's statistics, as an engine computing them would."""
    from pyiceberg.table.statistics import StatisticsFile

    table = catalog_for(args).load_table(args.table)
    snapshot_id = table.current_snapshot().snapshot_id
    size = os.path.getsize(args.file)
    stats = StatisticsFile(snapshot_id=snapshot_id, statistics_path=args.file, file_size_in_bytes=size, file_footer_size_in_bytes=min(size, 16), blob_metadata=[])
    with table.update_statistics() as update:
        update.set_statistics(stats)
    print(json.dumps({"metadata_location": table.metadata_location, "snapshot_id": str(snapshot_id)}))


def delete_rows(args):
    """Deletes rows through the table, as an analyst would: whole files where the filter covers them, else copy-on-write."""
    table = catalog_for(args).load_table(args.table)
    table.delete(args.filter)
    print(json.dumps({"metadata_location": table.metadata_location}))


def rename_column(args):
    """Renames a top-level column, as an analyst would; pyiceberg keeps the old name in the name mapping."""
    table = catalog_for(args).load_table(args.table)
    with table.update_schema() as update:
        update.rename_column(args.rename_from, args.rename_to)
    print(json.dumps({"metadata_location": table.metadata_location, "name_mapping": table.properties.get("schema.name-mapping.default")}))


COMMANDS = {"delete": delete_rows, "rename-column": rename_column, "scan": scan, "register": register, "add-files": add_files, "set-properties": set_properties, "create-tag": create_tag, "set-statistics": set_statistics}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        p = sub.add_parser(name)
        p.add_argument("--catalog", required=True, help="absolute path of catalog.db")
        p.add_argument("--name", default="earthcatalog", help="catalog name (catalog_name column)")
        p.add_argument("--table", default="earthcatalog.stac_items")
        p.add_argument("--warehouse", help="absolute warehouse directory (only for tables pyiceberg would create)")
        if name == "scan":
            p.add_argument("--select", help="comma-separated columns to read (default: all)")
            p.add_argument("--filter", help="pyiceberg row filter expression")
            p.add_argument("--ids", action="store_true", help="also print the sorted cell/id of every scanned row")
            p.add_argument("--files-only", action="store_true", help="plan the scan but read no data (row_count null)")
            p.add_argument("--metrics", action="store_true", help="also print every file's decoded column metrics")
            p.add_argument("--values", help="also print this column's value (as JSON text) by id")
        elif name == "register":
            p.add_argument("--metadata", required=True, help="metadata location to store in the catalog row")
        elif name == "add-files":
            p.add_argument("--files", required=True, help="comma-separated absolute paths of Parquet files")
        elif name == "create-tag":
            p.add_argument("--tag", action="append", required=True, help="name of a tag (repeatable: one commit)")
        elif name == "delete":
            p.add_argument("--filter", required=True, help="pyiceberg row filter of the rows to delete")
        elif name == "rename-column":
            p.add_argument("--from", dest="rename_from", required=True)
            p.add_argument("--to", dest="rename_to", required=True)
        elif name == "set-statistics":
            p.add_argument("--file", required=True, help="absolute path of the statistics file to register")
        else:
            p.add_argument("--set", action="append", required=True, help="key=value (repeatable)")
    args = parser.parse_args()
    try:
        COMMANDS[args.command](args)
    except Exception as exc:  # the caller asserts on the JSON, so report every failure the same way
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        sys.exit(2)


if __name__ == "__main__":
    main()
