/** The physical ground truth that verify compares against: every data file of the hive layout. */
import type { WarehouseStore } from '../storage/warehouse-store';
import type { BucketSelection } from '../../workflows/contract';
import { CONTROL_PREFIX, bucketKey, inCellFolder, looksLikeParquet, parseDataFileKey, selectionFilter, selectionPrefixes, type DataFileKey } from '../storage/warehouse-layout';

export interface PhysicalDataFile {
  key: string;
  size: number;
  parsed: DataFileKey;
  /** The bucket prefix, `grid_partition=<cell>/year=<year>`. */
  bucket: string;
  compacted: boolean;
}

/**
 * Data files of the selected buckets sorted by key; control objects, Iceberg metadata and non-layout keys
 * are not data. A selected data file whose key the store cannot address goes to `onUnaddressable`, and a
 * key under a bucket folder that is no data file of the layout but looks like Parquet (looksLikeParquet)
 * to `onOutsideLayout`.
 */
export async function listPhysicalDataFiles(
  store: WarehouseStore,
  selection: BucketSelection = {},
  onUnaddressable?: (key: string) => void,
  onOutsideLayout?: (key: string) => void,
): Promise<PhysicalDataFile[]> {
  const out: PhysicalDataFile[] = [];
  const selected = selectionFilter(selection);
  const skipped = (key: string) => {
    const parsed = parseDataFileKey(key);
    if (parsed && selected(parsed.bucket)) onUnaddressable?.(key);
  };
  for (const prefix of selectionPrefixes(selection)) {
    for await (const obj of store.list(prefix, skipped)) {
      if (obj.key.startsWith(CONTROL_PREFIX + '/')) continue;
      const parsed = parseDataFileKey(obj.key);
      if (!parsed && inCellFolder(obj.key) && looksLikeParquet(obj.key) && inSelectedYears(obj.key, selection)) onOutsideLayout?.(obj.key);
      if (!parsed || !selected(parsed.bucket)) continue;
      out.push({ key: obj.key, size: obj.size, parsed, bucket: bucketKey(parsed.bucket), compacted: parsed.name.startsWith('compacted_') });
    }
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** Whether a key outside the layout (under a cell folder: inCellFolder) is under a `year=` folder of the selected years (any key, without a year selection). */
function inSelectedYears(key: string, selection: BucketSelection): boolean {
  if (!selection.years) return true;
  const year = /^[^/]*\/year=(\d+)\//.exec(key)?.[1];
  return year !== undefined && selection.years.includes(Number(year));
}

export function groupByBucket<T extends { bucket: string }>(files: readonly T[]): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const f of files) {
    const list = groups.get(f.bucket);
    if (list) list.push(f);
    else groups.set(f.bucket, [f]);
  }
  return groups;
}
