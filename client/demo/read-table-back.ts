/** Reads the rebuilt table back through its catalog and prints what a reader sees. */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openCatalogBackend } from '../../activities/catalog/open-catalog';
import { describeTable } from '../../activities/catalog/describe-table';
import { openDuckSession, sqlStringList } from '../../activities/compaction/duckdb-session';
import { DEFAULT_CATALOG_NAME, DEFAULT_NAMESPACE, DEFAULT_TABLE } from '../../workflows/contract';

export async function readTableBack(catalog: string, warehouse: string): Promise<string> {
  const backend = await openCatalogBackend(catalog, warehouse, DEFAULT_CATALOG_NAME, { readOnly: true });
  try {
    const t = await describeTable(backend, DEFAULT_NAMESPACE, DEFAULT_TABLE);
    const rows = t.dataFiles.reduce((n, f) => n + f.recordCount, 0);
    const lines = [
      `table ${DEFAULT_NAMESPACE}.${DEFAULT_TABLE} in ${catalog}`,
      `  metadata  ${t.metadataLocation}`,
      `  snapshots ${t.snapshotCount} (current ${t.currentSnapshotId})`,
      `  files     ${t.dataFiles.length}, rows ${rows}`,
    ];
    const localFiles = t.dataFiles.filter((f) => f.path.startsWith('/')).map((f) => f.path);
    if (localFiles.length) {
      // A spill folder of its own, removed afterwards: one fixed path would be shared by every demo on the machine.
      const spill = await fs.mkdtemp(path.join(os.tmpdir(), 'earthcatalog-demo-duckdb-'));
      const duck = await openDuckSession({ tempDir: spill, memoryLimitMb: 256 });
      try {
        const list = sqlStringList(localFiles);
        const sample = await duck.rows(
          `SELECT grid_partition, year(datetime) AS year, platform, count(*) AS rows, count(DISTINCT id) AS ids
           FROM read_parquet(${list}, union_by_name = true, hive_partitioning = false)
           GROUP BY ALL ORDER BY grid_partition, year, platform LIMIT 12`,
        );
        lines.push('  rows by partition and platform (first 12 groups):');
        for (const r of sample) lines.push(`    ${r.grid_partition} ${r.year} ${String(r.platform).padEnd(12)} rows ${r.rows} distinct ids ${r.ids}`);
      } finally {
        duck.close();
        await fs.rm(spill, { recursive: true, force: true });
      }
    }
    return lines.join('\n');
  } finally {
    await backend.close();
  }
}
