import { randomUUID } from 'node:crypto';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { ObjectStore } from '../objects/object-store.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';

// Datasets: raw files in the object tier (datasets/<name>/raw/<uuid>/<file>) and processed versions,
// numbered from 1, each made by one pipeline job whose shards live under
// datasets/<name>/jobs/<job_id>/. A version row is written once, when its job has written
// every shard, and names its lineage: the raw files' sha256, the steps and parameters, the
// tokenizer and the Strata version. Raw files are immutable once uploaded (a version's lineage
// must stay true): uploading the same name again is a conflict.

export const datasetMigrations: Migration[] = [
  {
    engine: 'datasets',
    version: 1,
    name: 'datasets, raw files and versions',
    sql: `
      CREATE TABLE datasets (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE dataset_files (
        dataset TEXT NOT NULL REFERENCES datasets (name),
        file TEXT NOT NULL,
        key TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (dataset, file)
      ) STRICT;
      CREATE TABLE dataset_versions (
        dataset TEXT NOT NULL REFERENCES datasets (name),
        version INTEGER NOT NULL,
        job_id TEXT NOT NULL UNIQUE,
        rows INTEGER NOT NULL,
        shards TEXT NOT NULL,
        stats TEXT NOT NULL,
        lineage TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (dataset, version)
      ) STRICT;
    `,
  },
];

export const DATASET_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const RAW_FILE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(\/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,7}$/;

export interface Shard {
  /** The shard's name: the last segment of `path`, what …/shards/{shard} takes. */
  name: string;
  path: string;
  rows: number;
  bytes: number;
}

export interface DatasetVersion {
  version: number;
  job_id: string;
  rows: number;
  shards: Shard[];
  stats: Record<string, unknown>;
  lineage: Record<string, unknown>;
  created_at: string;
}

interface FileRow {
  file: string;
  key: string;
  size: number;
  sha256: string;
}

export class DatasetCatalog {
  private readonly created: ChangeType<{ name: string; description: string; created_at: string }>;
  private readonly filePut: ChangeType<FileRow & { dataset: string; created_at: string }>;
  private readonly versionPut: ChangeType<{ dataset: string; version: number; job_id: string; rows: number; shards: string; stats: string; lineage: string; created_at: string }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
    readonly objects: ObjectStore,
  ) {
    this.created = changes.define('datasets', 'create', (d, p) => {
      d.prepare('INSERT INTO datasets (name, description, created_at) VALUES (?, ?, ?)').run(p.name, p.description, p.created_at);
    });
    this.filePut = changes.define('datasets', 'put_file', (d, p) => {
      d.prepare('INSERT INTO dataset_files (dataset, file, key, size, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(p.dataset, p.file, p.key, p.size, p.sha256, p.created_at);
    });
    this.versionPut = changes.define('datasets', 'put_version', (d, p) => {
      d.prepare('INSERT INTO dataset_versions (dataset, version, job_id, rows, shards, stats, lineage, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
        p.dataset, p.version, p.job_id, p.rows, p.shards, p.stats, p.lineage, p.created_at,
      );
    });
  }

  async create(actor: Actor, name: string, description = ''): Promise<{ name: string; description: string; created_at: string }> {
    if (!DATASET_NAME.test(name)) throw new InvalidInput('dataset names are 1-64 of a-z 0-9 . _ - (starting with a letter or digit)');
    const row = { name, description, created_at: new Date().toISOString() };
    await this.writer.write(actor, (tx) => {
      if (this.find(name)) throw new Conflict(`dataset ${name} already exists`);
      tx.apply(this.created, row);
    });
    return row;
  }

  list(): Array<{ name: string; description: string; created_at: string }> {
    return this.db.prepare<{ name: string; description: string; created_at: string }>('SELECT * FROM datasets ORDER BY name').all();
  }

  get(name: string) {
    const d = this.find(name);
    if (!d) throw new NotFound(`dataset ${name} does not exist`);
    return {
      ...d,
      raw_files: this.files(name).map(({ file, size, sha256 }) => ({ file, size, sha256 })),
      versions: this.db
        .prepare<{ version: number; job_id: string; rows: number; created_at: string }>('SELECT version, job_id, rows, created_at FROM dataset_versions WHERE dataset = ? ORDER BY version')
        .all(name),
    };
  }

  files(name: string): FileRow[] {
    return this.db.prepare<FileRow>('SELECT file, key, size, sha256 FROM dataset_files WHERE dataset = ? ORDER BY file').all(name);
  }

  /** Streams a raw file into the object tier, then records it (a crash in between leaves an orphan object, never a row without bytes). */
  /**
   * Stores a raw file under a key of its own (…/raw/<uuid>/<file>) and records it. Two writers
   * of one name both write, one commits, and the other's bytes are deleted: writing straight to
   * …/raw/<file> let a refused writer replace the stored bytes (review). `inCommit` runs in
   * the recording transaction (a multipart upload ends its session there).
   */
  async putRawFile(
    actor: Actor,
    name: string,
    file: string,
    body: AsyncIterable<Uint8Array>,
    inCommit?: (tx: Tx, stored: { size: number; sha256: string }) => void,
  ): Promise<{ file: string; size: number; sha256: string }> {
    if (!this.find(name)) throw new NotFound(`dataset ${name} does not exist`);
    if (!RAW_FILE.test(file)) throw new InvalidInput('raw file names are up to 8 segments of letters, digits and . _ - (no . or .. segments)');
    if (this.db.prepare('SELECT 1 FROM dataset_files WHERE dataset = ? AND file = ?').get(name, file)) throw new Conflict(`raw file ${file} already exists in ${name}; raw files are immutable`);
    const key = `datasets/${name}/raw/${randomUUID()}/${file}`;
    const put = await this.objects.put(key, body);
    try {
      await this.writer.write(actor, (tx) => {
        if (this.db.prepare('SELECT 1 FROM dataset_files WHERE dataset = ? AND file = ?').get(name, file)) throw new Conflict(`raw file ${file} already exists in ${name}; raw files are immutable`);
        inCommit?.(tx, { size: put.size, sha256: put.sha256 });
        tx.apply(this.filePut, { dataset: name, file, key, size: put.size, sha256: put.sha256, created_at: new Date().toISOString() });
        tx.audit('datasets.put_file', `dataset:${name}/${file}`, { size: put.size });
      });
    } catch (err) {
      await this.objects.delete(key).catch(() => undefined);
      throw err;
    }
    return { file, size: put.size, sha256: put.sha256 };
  }

  version(name: string, version: number): DatasetVersion {
    const r = this.db
      .prepare<{ version: number; job_id: string; rows: number; shards: string; stats: string; lineage: string; created_at: string }>('SELECT * FROM dataset_versions WHERE dataset = ? AND version = ?')
      .get(name, version);
    if (!r) throw new NotFound(`dataset ${name} has no version ${version}`);
    return { ...r, shards: JSON.parse(r.shards) as Shard[], stats: JSON.parse(r.stats) as Record<string, unknown>, lineage: JSON.parse(r.lineage) as Record<string, unknown> };
  }

  versionOfJob(jobId: string): { dataset: string; version: number } | undefined {
    return this.db.prepare<{ dataset: string; version: number }>('SELECT dataset, version FROM dataset_versions WHERE job_id = ?').get(jobId);
  }

  /** Commits a finished job's output as the next version. */
  async addVersion(actor: Actor, name: string, v: Omit<DatasetVersion, 'version' | 'created_at'>): Promise<number> {
    return this.writer.write(actor, (tx) => {
      const next = (this.db.prepare<{ v: number | null }>('SELECT MAX(version) AS v FROM dataset_versions WHERE dataset = ?').get(name)?.v ?? 0) + 1;
      tx.apply(this.versionPut, {
        dataset: name,
        version: next,
        job_id: v.job_id,
        rows: v.rows,
        shards: JSON.stringify(v.shards),
        stats: JSON.stringify(v.stats),
        lineage: JSON.stringify(v.lineage),
        created_at: new Date().toISOString(),
      });
      tx.audit('datasets.put_version', `dataset:${name}/${next}`, { job_id: v.job_id, rows: v.rows });
      return next;
    });
  }

  find(name: string): { name: string; description: string; created_at: string } | undefined {
    return this.db.prepare<{ name: string; description: string; created_at: string }>('SELECT * FROM datasets WHERE name = ?').get(name);
  }
}
