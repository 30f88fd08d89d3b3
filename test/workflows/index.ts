/** Test bundle: the product's workflows and probes: a lock holder as an ingest workflow would hold it, a test activity retried like a bucket, a continue-as-new into compactWarehouse. */
export * from '../../workflows';
export { lockProbe } from './lock-probe';
export { retryProbe } from './retry-probe';
export { continueIntoCompaction } from './continue-probe';
