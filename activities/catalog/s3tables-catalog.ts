/**
 * Amazon S3 Tables as the Iceberg catalog (`--catalog arn:aws:s3tables:<region>:<account>:bucket/<name>`).
 *
 * The namespace and the table are created when absent (an empty ICEBERG table: S3 Tables gives it a
 * warehouse location and a version token). New metadata files are written under that warehouse
 * location through the table bucket's S3 object API (Put/Get only: it has no List and no Delete),
 * and the pointer is swapped with UpdateTableMetadataLocation on the version token that was read,
 * so a reader sees the old metadata or the new, and a concurrent writer is a CatalogConflictError.
 *
 * The data files stay in the general-purpose warehouse bucket and are registered there by their
 * s3:// URIs; see the README ("S3 Tables") for what that means for engines and table maintenance.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import {
  CreateNamespaceCommand,
  CreateTableCommand,
  GetNamespaceCommand,
  GetTableBucketCommand,
  GetTableMetadataLocationCommand,
  UpdateTableMetadataLocationCommand,
  type GetTableMetadataLocationCommandOutput,
  type S3TablesClient,
} from '@aws-sdk/client-s3tables';
import type { IcebergCatalogBackend, TableHandle, TablePointer } from './catalog-backend';
import { CatalogConflictError, CatalogRequestError } from './catalog-backend';
import { s3TablesNameProblems } from '../../workflows/contract';
import { S3MetadataFileIO } from './s3-catalog-db';
import { StorageError } from '../storage/warehouse-store';
import { createS3Client, createS3TablesClient, type S3ClientSettings } from '../storage/s3-client';
import { describeS3Error, errorCode, noCredentialsError } from '../storage/s3-errors';

/**
 * Refuses before any request a name S3 Tables would refuse, saying its rule: the input's validation
 * does too, but not for runs started before it did, nor for callers of the activities' modules.
 */
export function assertS3TablesNames(namespace: string, table: string, tableBucketArn: string): void {
  const [first] = s3TablesNameProblems({ namespace, table }, tableBucketArn);
  if (first) throw new CatalogRequestError(first.problem);
}

const TABLE_BUCKET_ARN = /^arn:(aws[a-z-]*):s3tables:([a-z0-9-]+):(\d{12}):bucket\/([a-z0-9][a-z0-9-]{1,61}[a-z0-9])$/;

export interface S3TablesCatalogOptions {
  /** Clients to use (then not destroyed by close); by default from the environment, in the ARN's region. */
  tables?: S3TablesClient;
  s3?: S3Client;
  clientSettings?: S3ClientSettings;
}

export function parseTableBucketArn(arn: string): { region: string; account: string; bucketName: string } {
  const m = TABLE_BUCKET_ARN.exec(arn);
  if (!m) throw new StorageError(`not an S3 Tables table-bucket ARN (arn:aws:s3tables:<region>:<account>:bucket/<name>): ${arn}`, 'invalid-key');
  return { region: m[2]!, account: m[3]!, bucketName: m[4]! };
}

interface OpenedTable {
  versionToken: string;
  warehouseLocation: string;
}

export class S3TablesCatalogBackend implements IcebergCatalogBackend {
  readonly description: string;
  private readonly io: S3MetadataFileIO;
  /** What openTable read per table: the token a commit of a table without metadata needs. */
  private readonly opened = new Map<string, OpenedTable>();

  private constructor(
    readonly tableBucketArn: string,
    private readonly tables: S3TablesClient,
    private readonly s3: S3Client,
    private readonly ownsClients: boolean,
  ) {
    this.description = `S3 Tables bucket ${tableBucketArn}`;
    // Table buckets document no conditional writes; our metadata file names are unique anyway.
    this.io = new S3MetadataFileIO(s3, { createOnly: false });
  }

  static async open(tableBucketArn: string, opts: S3TablesCatalogOptions = {}): Promise<S3TablesCatalogBackend> {
    const { region } = parseTableBucketArn(tableBucketArn);
    if (opts.tables && opts.s3) return new S3TablesCatalogBackend(tableBucketArn, opts.tables, opts.s3, false);
    const settings = { region, ...opts.clientSettings };
    return new S3TablesCatalogBackend(tableBucketArn, await createS3TablesClient(settings), await createS3Client(settings), true);
  }

  private fail(err: unknown, what: string): unknown {
    const missing = noCredentialsError(err, `${what} in ${this.tableBucketArn}`);
    if (missing) return missing;
    const code = errorCode(err);
    if (code === 'AccessDeniedException' || code === 'ForbiddenException') {
      return new StorageError(`access to ${what} in ${this.tableBucketArn} denied (${describeS3Error(err)})`, 'denied');
    }
    if (code === 'BadRequestException') return new CatalogRequestError(`${what} in ${this.tableBucketArn}: request refused (${describeS3Error(err)})`);
    return err;
  }

  private async ensureNamespace(namespace: string): Promise<void> {
    try {
      await this.tables.send(new GetNamespaceCommand({ tableBucketARN: this.tableBucketArn, namespace }));
      return;
    } catch (err) {
      if (errorCode(err) !== 'NotFoundException') throw this.fail(err, `namespace ${namespace}`);
    }
    try {
      await this.tables.send(new CreateNamespaceCommand({ tableBucketARN: this.tableBucketArn, namespace: [namespace] }));
    } catch (err) {
      // Created meanwhile by someone else: just as good.
      if (errorCode(err) !== 'ConflictException') throw this.notFoundBucket(err) ?? this.fail(err, `namespace ${namespace}`);
    }
  }

  /** A NotFoundException while creating a namespace means the table bucket itself is missing. */
  private notFoundBucket(err: unknown): StorageError | undefined {
    return errorCode(err) === 'NotFoundException' ? new StorageError(`table bucket ${this.tableBucketArn} does not exist`, 'not-found') : undefined;
  }

  private async metadataLocation(namespace: string, table: string): Promise<GetTableMetadataLocationCommandOutput | undefined> {
    try {
      return await this.tables.send(new GetTableMetadataLocationCommand({ tableBucketARN: this.tableBucketArn, namespace, name: table }));
    } catch (err) {
      if (errorCode(err) === 'NotFoundException') return undefined;
      throw this.fail(err, `table ${namespace}.${table}`);
    }
  }

  async findTable(namespace: string, table: string): Promise<TablePointer | undefined> {
    assertS3TablesNames(namespace, table, this.tableBucketArn);
    // A missing namespace is a NotFoundException too: nothing is created to find out.
    const found = await this.metadataLocation(namespace, table);
    if (found?.metadataLocation && found.versionToken) return { metadataLocation: found.metadataLocation, versionToken: found.versionToken };
    // So is a missing table bucket (a mistyped ARN): the pre-flight must refuse it before any bucket is compacted.
    await this.assertBucketExists();
    return undefined;
  }

  async tableWithoutMetadata(namespace: string, table: string): Promise<boolean> {
    assertS3TablesNames(namespace, table, this.tableBucketArn);
    const found = await this.metadataLocation(namespace, table);
    return found !== undefined && !found.metadataLocation;
  }

  private async assertBucketExists(): Promise<void> {
    try {
      await this.tables.send(new GetTableBucketCommand({ tableBucketARN: this.tableBucketArn }));
    } catch (err) {
      throw this.notFoundBucket(err) ?? this.fail(err, 'the table bucket');
    }
  }

  async openTable(namespace: string, table: string): Promise<TableHandle> {
    assertS3TablesNames(namespace, table, this.tableBucketArn);
    await this.ensureNamespace(namespace);
    let found = await this.metadataLocation(namespace, table);
    const existedWithoutMetadata = found !== undefined && !found.metadataLocation;
    if (!found) {
      try {
        await this.tables.send(new CreateTableCommand({ tableBucketARN: this.tableBucketArn, namespace, name: table, format: 'ICEBERG' }));
      } catch (err) {
        if (errorCode(err) !== 'ConflictException') throw this.fail(err, `table ${namespace}.${table}`);
      }
      found = await this.metadataLocation(namespace, table);
      if (!found) throw new Error(`table ${namespace}.${table} in ${this.tableBucketArn} vanished right after it was created`);
    }
    const warehouseLocation = (found.warehouseLocation ?? '').replace(/\/+$/, '');
    if (!warehouseLocation.startsWith('s3://') || !found.versionToken) {
      throw new Error(`table ${namespace}.${table} in ${this.tableBucketArn} has no warehouse location or version token`);
    }
    this.opened.set(`${namespace}.${table}`, { versionToken: found.versionToken, warehouseLocation });
    return {
      pointer: found.metadataLocation ? { metadataLocation: found.metadataLocation, versionToken: found.versionToken } : undefined,
      // S3 Tables accepts only metadata locations under the table's warehouse location.
      metadataDir: `${warehouseLocation}/metadata`,
      defaultLocation: warehouseLocation,
      ...(existedWithoutMetadata ? { existedWithoutMetadata } : {}),
    };
  }

  readFile(uri: string): Promise<Buffer> {
    return this.io.read(uri);
  }

  writeFile(uri: string, bytes: Buffer): Promise<void> {
    return this.io.write(uri, bytes);
  }

  async commit(namespace: string, table: string, newMetadataLocation: string, expected: TablePointer | undefined): Promise<void> {
    const key = `${namespace}.${table}`;
    const opened = this.opened.get(key);
    const versionToken = expected?.versionToken ?? opened?.versionToken;
    if (!versionToken || !opened) throw new Error(`commit of ${key} in ${this.tableBucketArn} without openTable first`);
    if (!newMetadataLocation.startsWith(`${opened.warehouseLocation}/`)) {
      throw new Error(`metadata ${newMetadataLocation} is not under the warehouse location ${opened.warehouseLocation} of ${key}; S3 Tables would refuse it`);
    }
    try {
      const res = await this.tables.send(
        new UpdateTableMetadataLocationCommand({ tableBucketARN: this.tableBucketArn, namespace, name: table, versionToken, metadataLocation: newMetadataLocation }),
      );
      if (res.versionToken) this.opened.set(key, { ...opened, versionToken: res.versionToken });
    } catch (err) {
      if (errorCode(err) === 'ConflictException') {
        throw new CatalogConflictError(`${key} in ${this.description} was changed by someone else since it was read (stale version token); rebuild again`);
      }
      throw this.fail(err, `table ${key}`);
    }
  }

  /**
   * The pre-flight's proof that the rebuild's commit will be allowed, writing nothing: a swap to the
   * pointer the table already has, on a version token that cannot match. S3 Tables authorizes a request
   * before it compares tokens, so a policy with UpdateTableMetadataLocation gets a conflict and one
   * without it AccessDenied; otherwise the missing permission would be found at the commit, after every
   * bucket had deleted its inputs. A table without metadata yet cannot point at deleted files.
   */
  async assertWritable(namespace: string, table: string): Promise<void> {
    const pointer = await this.findTable(namespace, table);
    const token = pointer?.versionToken;
    if (!pointer || !token) return;
    const key = `${namespace}.${table}`;
    // Same length and alphabet as the real token, so that it is refused as stale rather than as malformed.
    const staleToken = token.slice(0, -1) + (token.endsWith('0') ? '1' : '0');
    try {
      // Were a server not to compare tokens, it would set the pointer to where it already is.
      await this.tables.send(
        new UpdateTableMetadataLocationCommand({ tableBucketARN: this.tableBucketArn, namespace, name: table, versionToken: staleToken, metadataLocation: pointer.metadataLocation }),
      );
    } catch (err) {
      if (errorCode(err) === 'ConflictException') return;
      const failure = this.fail(err, `table ${key}`);
      // A token refused as malformed rather than stale proves nothing, but must not fail every run either:
      // the commit will tell, as it did before this proof.
      if (failure instanceof CatalogRequestError) return;
      if (!(failure instanceof StorageError) || failure.kind !== 'denied') throw failure;
      throw new StorageError(
        `table ${key} in ${this.tableBucketArn} cannot be committed (${describeS3Error(err)}): the run would compact buckets and then ` +
          'fail to point the table at their outputs; nothing was changed. Give the worker s3tables:UpdateTableMetadataLocation on it',
        'denied',
      );
    }
  }

  async close(): Promise<void> {
    if (!this.ownsClients) return;
    this.tables.destroy();
    this.s3.destroy();
  }
}
