/**
 * earthcatalog-compaction: the client API and the worker plugin. Workflow code that wants the lock
 * (e.g. an ingest workflow writing the same catalog) imports `earthcatalog-compaction/workflows/lock`
 * from inside its workflows instead: this module loads Node-only code.
 */
export { compactWarehouse, type CompactWarehouseOptions } from './client/api';
export { startCompaction, followCompaction, CompactionEndedError } from './client/start-compaction';
export { createCompactionSchedule } from './client/commands/schedule';
export { EarthcatalogCompactionPlugin, type CompactionPluginOptions } from './worker/plugin';
export { createActivities, type ActivityResources } from './activities';
export { verifyWarehouse } from './activities/verification/verify-warehouse';
export * from './workflows/contract';
export type { CompactionProgress } from './workflows/progress';
