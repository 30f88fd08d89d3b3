/** Test bundle: the product's workflows plus a probe that uses the lock the way an ingest workflow would. */
export * from '../../workflows';
export { lockProbe } from './lock-probe';
