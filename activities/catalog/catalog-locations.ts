/**
 * Locations as catalogs record them: one place may be spelled `s3://`, `s3a://` or `s3n://`, or as a
 * path with or without `file:`, depending on the engine that wrote the entry.
 */

/** A location with the spellings of one place made equal (`s3a://` and `s3n://` are `s3://`; `file:` is dropped). */
export function comparable(location: string): string {
  return location.replace(/^s3[an]:\/\//, 's3://').replace(/^file:(\/\/)?/, '');
}

/**
 * The warehouse key of a registered location under `warehouseRoot` (however its scheme is spelled), or
 * undefined outside it. The rebuild and `verify` both resolve registrations through it, so that they
 * agree on which entries belong to the warehouse.
 */
export function warehouseKeyOf(warehouseRoot: string): (location: string) => string | undefined {
  const root = comparable(warehouseRoot).replace(/\/*$/, '/');
  return (location) => {
    const plain = comparable(location);
    return plain.startsWith(root) ? plain.slice(root.length) : undefined;
  };
}
