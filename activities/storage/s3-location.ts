/** s3:// URIs and the bucket/key pairs the SDK wants. */
import { StorageError } from './warehouse-store';

export interface S3Location {
  bucket: string;
  /** The object key or key prefix, without a leading slash ('' is the bucket root). */
  key: string;
}

const S3_URI = /^s3:\/\/([^/]+)(?:\/(.*))?$/;

export function parseS3Uri(uri: string): S3Location {
  const m = S3_URI.exec(uri);
  if (!m || !m[1]) throw new StorageError(`not an s3://bucket/key URI: ${uri}`, 'invalid-key');
  return { bucket: m[1], key: m[2] ?? '' };
}

export function s3Uri(loc: S3Location): string {
  return loc.key ? `s3://${loc.bucket}/${loc.key}` : `s3://${loc.bucket}`;
}
