/** Test bundle: the product's workflows, a probe that uses the lock the way an ingest workflow would, and one that retries a test activity like a bucket. */
export * from '../../workflows';
export { lockProbe } from './lock-probe';
export { retryProbe } from './retry-probe';
