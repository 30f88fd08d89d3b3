/** s3:// URIs and the bucket/key pairs the SDK wants. */
import { StorageError } from './warehouse-store';

export interface S3Location {
  bucket: string;
  /** The object key or key prefix, without a leading slash ('' is the bucket root). */
  key: string;
}

// s3a:// and s3n:// are Hadoop's spellings of the same objects: Spark writes them into Iceberg metadata.
const S3_URI = /^s3[an]?:\/\/([^/]+)(?:\/(.*))?$/;

/** Whether `uri` names an S3 object in any of its spellings (parseS3Uri reads them all). */
export function isS3Uri(uri: string): boolean {
  return /^s3[an]?:\/\//.test(uri);
}

export function parseS3Uri(uri: string): S3Location {
  const m = S3_URI.exec(uri);
  if (!m || !m[1]) throw new StorageError(`not an s3://bucket/key URI: ${uri}`, 'invalid-key');
  return { bucket: m[1], key: m[2] ?? '' };
}

export function s3Uri(loc: S3Location): string {
  return loc.key ? `s3://${loc.bucket}/${loc.key}` : `s3://${loc.bucket}`;
}
