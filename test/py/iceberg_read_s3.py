#!/usr/bin/env python3
"""iceberg_read.py for tables whose files are in S3 (test tooling).

    iceberg_read_s3.py scan --catalog /abs/local-copy-of/catalog.db [same options as iceberg_read.py scan]
        As iceberg_read.py, with pyiceberg's S3 FileIO configured from the standard environment
        (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).

    iceberg_read_s3.py scan-metadata --metadata s3://.../metadata/xxx.metadata.json [--ids] [--files-only]
        Loads the table straight from a metadata file (as an S3 Tables reader gets it from
        GetTableMetadataLocation) and prints the same JSON as scan.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import iceberg_read  # noqa: E402  (the shared scanner; this module only adds S3 settings)


def s3_properties():
    props = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        props["s3.endpoint"] = endpoint
        props["s3.force-virtual-addressing"] = "false"
    for env, key in (("AWS_REGION", "s3.region"), ("AWS_ACCESS_KEY_ID", "s3.access-key-id"), ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key")):
        if os.environ.get(env):
            props[key] = os.environ[env]
    return props


def catalog_for(args):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(args.name, uri=f"sqlite:///{args.catalog}", **s3_properties())


class StaticCatalog:
    """Just enough of a catalog for iceberg_read.scan: load_table returns the static table."""

    def __init__(self, metadata_location):
        self.metadata_location = metadata_location

    def load_table(self, _identifier):
        from pyiceberg.table import StaticTable

        return StaticTable.from_metadata(self.metadata_location, properties=s3_properties())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("scan", "scan-metadata"):
        p = sub.add_parser(name)
        if name == "scan":
            p.add_argument("--catalog", required=True, help="absolute path of a local copy of catalog.db")
            p.add_argument("--name", default="earthcatalog")
        else:
            p.add_argument("--metadata", required=True, help="s3:// location of the table metadata JSON")
        p.add_argument("--table", default="earthcatalog.stac_items")
        p.add_argument("--select")
        p.add_argument("--filter")
        p.add_argument("--ids", action="store_true")
        p.add_argument("--files-only", action="store_true")
    args = parser.parse_args()
    if args.command == "scan":
        iceberg_read.catalog_for = catalog_for
    else:
        iceberg_read.catalog_for = lambda a: StaticCatalog(a.metadata)
    try:
        iceberg_read.scan(args)
    except Exception as exc:  # the caller asserts on the JSON, so report every failure the same way
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        sys.exit(2)


if __name__ == "__main__":
    main()
