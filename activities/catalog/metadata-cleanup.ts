/**
 * Deletes the manifests, manifest lists and statistics files that the rebuild's commit left
 * unreferenced, as Iceberg's snapshot expiry does. A rebuild replaces every snapshot, so without this
 * each weekly run left the previous generation behind (a few MB per rebuild of the full warehouse),
 * forever.
 *
 * Which files: those reachable from the table's own history since our previous rebuild (the replaced
 * metadata, then its metadata log back to and including what that rebuild replaced), minus those the
 * new metadata references and those the replaced metadata's current snapshot references (a reader that
 * loaded it just before the swap can finish its scan; they go at the next rebuild). Besides, what earlier
 * attempts of this rebuild wrote and never committed (a worker killed before its commit, found by their
 * commits' UUIDs, which the activity heartbeated). Otherwise a file no metadata of this table references
 * (another writer's commit in progress, another table sharing the directory) is never touched, and data
 * files are never touched at all. Old
 * metadata JSON files go only when the table asks for it with Iceberg's
 * `write.metadata.delete-after-commit.enabled` (those its metadata log no longer lists); nothing goes when
 * `gc.enabled` is false. Best effort: the commit has happened, so a failure here is reported, not thrown.
 * The files of a snapshot that a tag or branch points to are kept (Iceberg's expiry never removes them
 * either; the rebuild keeps only `main`, so those refs survive in the old metadata files only), and only
 * Avro, metadata JSON and statistics files directly in the table's metadata directory are ever deleted, whatever
 * a manifest list, a metadata log or a statistics entry written by another engine or by hand names.
 * Limit, as with Iceberg's own expiry: a manifest that another table registered from ours still uses is
 * not known here.
 */
import { comparable } from './catalog-locations';
import type { IcebergCatalogBackend } from './catalog-backend';
import { currentSnapshot, readManifestList } from './describe-table';
import { MetadataFileMissingError, parentOf, plainLocation } from './metadata-file-io';
import type { TableMetadataJson } from './table-metadata';
import { REBUILD_SUMMARY_KEY, parseTableMetadata } from './table-metadata';

export interface MetadataCleanupRequest {
  backend: IcebergCatalogBackend;
  /** The metadata just committed and the files it references. */
  committed: { metadataLocation: string; metadata: TableMetadataJson; manifestList: string; manifests: readonly string[] };
  /** The metadata the commit replaced; absent for a new table. */
  replaced?: { metadataLocation: string; metadata: TableMetadataJson };
  /** UUIDs of commits that earlier attempts of this rebuild began (a killed worker's): what they left unreferenced goes too. */
  abandonedCommits?: readonly string[];
}

export interface MetadataCleanupResult {
  /** Files deleted (manifests, manifest lists, and old metadata JSON files where the table asks for it). */
  deleted: number;
  /** Why nothing was looked at (the table's settings, a catalog that cleans up itself). */
  note?: string;
  /** Why nothing was deleted although the table's settings allow it. */
  error?: string;
}

export async function removeExpiredMetadata(req: MetadataCleanupRequest): Promise<MetadataCleanupResult> {
  const { backend, committed, replaced } = req;
  const properties = committed.metadata.properties ?? {};
  if (!backend.deleteFiles) return { deleted: 0, note: `${backend.description} removes unreferenced files itself` };
  if (!icebergBoolean(properties['gc.enabled'], true)) return { deleted: 0, note: `the table sets gc.enabled=${properties['gc.enabled']}` };

  let doomed: string[];
  try {
    const keep = await referencedNames(backend, committed, replaced);
    const candidates = new Map<string, string>();
    for (const location of await abandonedFiles(backend, parentOf(committed.metadataLocation), req.abandonedCommits ?? [])) candidates.set(nameOf(location), location);
    const history = replaced ? await historySincePreviousRebuild(backend, replaced) : [];
    // Snapshots a tag or branch points to keep their files, like Iceberg's expiry keeps them.
    const tagged = new Set(history.flatMap((m) => Object.entries(m.refs ?? {}).filter(([name]) => name !== 'main').map(([, ref]) => ref['snapshot-id'])));
    // The replaced table's current list and all it names are kept: no need to read it a second time.
    const replacedList = replaced && currentSnapshot(replaced.metadata, replaced.metadataLocation)?.['manifest-list'];
    const seenLists = new Set<string>(replacedList ? [replacedList] : []);
    const listNames = new Set<string>();
    for (const metadata of history) {
      // Statistics files (Puffin, partition statistics) another engine computed: the rebuild drops their
      // entries with the snapshots they describe.
      for (const stats of statisticsFiles(metadata)) {
        if (tagged.has(stats.snapshotId)) keep.add(nameOf(stats.path));
        else candidates.set(nameOf(stats.path), stats.path);
      }
      for (const snapshot of metadata.snapshots ?? []) {
        // A snapshot without a list (format 1, manifests inline) has nothing this cleanup can reach.
        const list: string | undefined = snapshot['manifest-list'];
        if (!list || seenLists.has(list)) continue;
        seenLists.add(list);
        const manifests = await manifestsOf(backend, list);
        if (!manifests) continue;
        listNames.add(nameOf(list));
        const files = new Map([list, ...manifests].map((f) => [nameOf(f), f]));
        if (tagged.has(snapshot['snapshot-id'])) for (const name of files.keys()) keep.add(name);
        else for (const [name, f] of files) candidates.set(name, f);
      }
    }
    if (replaced && icebergBoolean(properties['write.metadata.delete-after-commit.enabled'], false)) {
      for (const entry of replaced.metadata['metadata-log'] ?? []) candidates.set(nameOf(entry['metadata-file']), entry['metadata-file']);
    }
    // Where this table's metadata is written: beside its metadata file (where the rebuild writes), in
    // its location's metadata directory (other writers' default), or where a table property says.
    const metadataDirs = [parentOf(committed.metadataLocation), `${committed.metadata.location.replace(/\/+$/, '')}/metadata`, properties['write.metadata.path']]
      .filter((d): d is string => Boolean(d) && plainLocation(d))
      .map((d) => `${comparable(d).replace(/\/+$/, '')}/`);
    // Manifests and statistics before the lists that name them, lists before metadata files: a cleanup
    // cut short leaves its rest still reachable from what remains, not manifests that no list names.
    const stage = (name: string) => (name.endsWith('.metadata.json') ? 2 : listNames.has(name) ? 1 : 0);
    doomed = [...candidates]
      .filter(([name, location]) => !keep.has(name) && deletableName(name) && metadataDirs.some((d) => directlyIn(location, d)))
      .sort(([a], [b]) => stage(a) - stage(b))
      .map(([, location]) => location);
  } catch (err) {
    // Without knowing everything that is still referenced, nothing is deleted.
    return { deleted: 0, error: `old metadata files were not removed: ${messageOf(err)}` };
  }
  try {
    await backend.deleteFiles(doomed);
    return { deleted: doomed.length };
  } catch (err) {
    return { deleted: 0, error: `old metadata files were not all removed: ${messageOf(err)}` };
  }
}

/**
 * File names that a reader of the new table or of the replaced one may open. Compared by name, which
 * Iceberg makes unique (a UUID in it): the same file written as a relative and an absolute location is
 * still recognised, and a collision could only keep a file, never delete one.
 */
async function referencedNames(
  backend: IcebergCatalogBackend,
  committed: MetadataCleanupRequest['committed'],
  replaced: MetadataCleanupRequest['replaced'],
): Promise<Set<string>> {
  const names = new Set<string>([committed.metadataLocation, committed.manifestList, ...committed.manifests].map(nameOf));
  for (const entry of committed.metadata['metadata-log'] ?? []) names.add(nameOf(entry['metadata-file']));
  for (const stats of statisticsFiles(committed.metadata)) names.add(nameOf(stats.path));
  if (!replaced) return names;
  names.add(nameOf(replaced.metadataLocation));
  const snapshot = currentSnapshot(replaced.metadata, replaced.metadataLocation);
  // A reader of the replaced table may still read its current snapshot's statistics, as its manifests.
  for (const stats of statisticsFiles(replaced.metadata)) if (stats.snapshotId === snapshot?.['snapshot-id']) names.add(nameOf(stats.path));
  if (snapshot?.['manifest-list']) {
    names.add(nameOf(snapshot['manifest-list']));
    // Read, not skipped when missing: what a reader of the replaced table opens must be known exactly.
    for (const m of await readManifestList(backend, snapshot['manifest-list'])) names.add(nameOf(m.manifest_path));
  }
  return names;
}

/**
 * The replaced metadata and, newest first, the metadata files of its log back to and including the one
 * our previous rebuild replaced: what was committed since that rebuild, and what it left to this one.
 * Older files were dealt with by earlier rebuilds. The rebuild is recognised by its snapshot, which later
 * commits that change no data (properties, say) keep as their current one. Without a previous rebuild,
 * the whole log.
 */
async function historySincePreviousRebuild(
  backend: IcebergCatalogBackend,
  replaced: NonNullable<MetadataCleanupRequest['replaced']>,
): Promise<TableMetadataJson[]> {
  const history = [replaced.metadata];
  let rebuildSnapshot = rebuildSnapshotOf(replaced.metadata, replaced.metadataLocation);
  for (const entry of [...(replaced.metadata['metadata-log'] ?? [])].reverse()) {
    const location = entry['metadata-file'];
    let text: string;
    try {
      text = (await backend.readFile(location)).toString('utf8');
    } catch (err) {
      // Older metadata files were deleted (delete-after-commit, or by hand): the history ends here.
      if (err instanceof MetadataFileMissingError) break;
      throw err;
    }
    let metadata: TableMetadataJson;
    try {
      metadata = parseTableMetadata(text, location);
    } catch {
      // A metadata file from before the table was format 2 (or damaged) ends the history too: stopping
      // early can only leave files behind, never delete one that is referenced.
      break;
    }
    history.push(metadata);
    const current = currentSnapshot(metadata, location)?.['snapshot-id'];
    // Past the rebuild's own metadata: this is what it replaced.
    if (rebuildSnapshot !== undefined && current !== rebuildSnapshot) break;
    rebuildSnapshot ??= rebuildSnapshotOf(metadata, location);
  }
  return history;
}

/** The id of the metadata's current snapshot when one of our rebuilds committed it. */
function rebuildSnapshotOf(metadata: TableMetadataJson, location: string): string | undefined {
  const current = currentSnapshot(metadata, location);
  return current?.summary?.[REBUILD_SUMMARY_KEY] === 'true' ? current['snapshot-id'] : undefined;
}

/**
 * The files in `dir` (where the rebuild writes) whose names carry the UUID of a commit an earlier attempt
 * began: its manifests, manifest list and metadata file. The directory is listed only for these names,
 * which no other writer makes; one of them that a commit references (the attempt did commit, its worker
 * died before it said so) is kept like any referenced file.
 */
async function abandonedFiles(backend: IcebergCatalogBackend, dir: string, commitUuids: readonly string[]): Promise<string[]> {
  if (commitUuids.length === 0 || !backend.listFiles) return [];
  return (await backend.listFiles(dir)).filter((location) => commitUuids.some((uuid) => nameOf(location).includes(uuid)));
}

/** The manifests of a manifest list; undefined when an earlier cleanup deleted the list already. */
async function manifestsOf(backend: IcebergCatalogBackend, list: string): Promise<string[] | undefined> {
  try {
    return (await readManifestList(backend, list)).map((m) => m.manifest_path);
  } catch (err) {
    if (err instanceof MetadataFileMissingError) return undefined;
    throw err;
  }
}

function nameOf(location: string): string {
  return location.slice(location.lastIndexOf('/') + 1);
}

/** A table property read as Iceberg's Java implementation reads it (`Boolean.parseBoolean`): only "true", in any case, is true. */
function icebergBoolean(value: string | undefined, absent: boolean): boolean {
  return value === undefined ? absent : value.toLowerCase() === 'true';
}

/**
 * Manifests and manifest lists (Avro), metadata JSON files and statistics files (Puffin `.stats`, and
 * Iceberg's `partition-stats-*` files): the only kinds this cleanup deletes.
 */
function deletableName(name: string): boolean {
  return /\.(avro|metadata\.json|stats|puffin)$/.test(name) || /^partition-stats-.*\.(parquet|avro|orc)$/.test(name);
}

/** The statistics files a metadata file lists, with the snapshot each describes; malformed entries are skipped. */
function statisticsFiles(metadata: TableMetadataJson): { snapshotId: string; path: string }[] {
  const out: { snapshotId: string; path: string }[] = [];
  for (const entry of [...(metadata.statistics ?? []), ...(metadata['partition-statistics'] ?? [])]) {
    if (typeof entry !== 'object' || entry === null) continue;
    const { 'snapshot-id': snapshotId, 'statistics-path': path } = entry as Record<string, unknown>;
    if (typeof path === 'string' && (typeof snapshotId === 'string' || typeof snapshotId === 'number')) out.push({ snapshotId: String(snapshotId), path });
  }
  return out;
}

/** Whether `location` names a file directly in `dir` (a comparable directory ending in '/'). */
function directlyIn(location: string, dir: string): boolean {
  const c = comparable(location);
  return plainLocation(location) && c.startsWith(dir) && !c.slice(dir.length).includes('/');
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
