import { createHash } from 'node:crypto';
import { Conflict, InvalidInput, NotFound } from '../../../engines/errors.js';
import { RAW_FILE, type DatasetCatalog } from '../../../engines/datasets/dataset-catalog.js';
import type { ModelUploads } from '../../../engines/models/model-uploads.js';
import { getReferenced } from '../../../engines/objects/object-store.js';
import type { Actor } from '../../../engines/sql/writer.js';
import { S3Error } from './s3-error.js';
import { compareKeys, type ObjectLocation, type S3Bucket, type S3Multipart, type S3Object } from './s3-bucket.js';
import { multipart } from './s3-multipart.js';

// The `datasets` bucket: {dataset}/raw/{file} for the raw files (a PUT adds one; raw files are
// immutable, so a second PUT of a name is refused) and {dataset}/v{N}/{shard} for the Parquet
// shards of version N (read-only: versions come from pipeline jobs). Datasets may mix
// tenants, so user tokens cannot read them (readAccess `shared`, as on the native API).
// Reads come from the hot tier directly (datasets are not in the model cache).

export class DatasetBucket implements S3Bucket {
  readonly name = 'datasets';
  readonly readAccess = 'shared' as const;
  readonly multipart: S3Multipart;

  constructor(
    private readonly datasets: DatasetCatalog,
    private readonly lost: (key: string) => void,
    readonly createdAt: string,
    uploads: ModelUploads,
  ) {
    // Raw files may arrive in parts (aws s3 cp goes multipart from 8 MiB): the parts wait in
    // the upload sessions and are streamed into the catalog when the upload completes.
    this.multipart = multipart(uploads, {
        kind: 'dataset',
        target: (key) => {
          const { dataset, file } = rawKey(key);
          return { owner: dataset, version: '', path: file };
        },
        begin: async (_actor, key) => {
          const { dataset, file } = rawKey(key);
          try {
            this.datasets.get(dataset);
          } catch (err) {
            if (err instanceof NotFound) throw new S3Error('NoSuchKey', `${err.message}; create it with POST /v1/datasets`);
            throw err;
          }
          if (!RAW_FILE.test(file)) throw new S3Error('InvalidArgument', 'raw file names are up to 8 segments of letters, digits and . _ - (no . or .. segments)');
          if (this.datasets.files(dataset).some((f) => f.file === file)) throw new S3Error('AccessDenied', `raw file ${file} already exists in ${dataset}; raw files are immutable`);
        },
        etag: (sha256) => sha256,
        sink: () => ({ consume: (actor, body, s, inCommit) => this.datasets.putRawFile(actor, s.model, s.path, body, inCommit) }),
      });
  }

  list(prefix: string): S3Object[] {
    const slash = prefix.indexOf('/');
    const names = this.datasets.list().map((d) => d.name).filter((n) => (slash === -1 ? n.startsWith(prefix) : n === prefix.slice(0, slash)));
    const out: S3Object[] = [];
    for (const name of names) {
      const d = this.datasets.get(name);
      for (const f of d.raw_files) out.push({ key: `${name}/raw/${f.file}`, size: f.size, etag: f.sha256, lastModified: d.created_at });
      for (const v of d.versions) {
        for (const s of this.datasets.version(name, v.version).shards) out.push({ key: `${name}/v${v.version}/${s.name}`, size: s.bytes, etag: shardTag(s.path, s.bytes), lastModified: v.created_at });
      }
    }
    return out.filter((o) => o.key.startsWith(prefix)).sort((a, b) => compareKeys(a.key, b.key));
  }

  locate(key: string): ObjectLocation {
    const where = this.find(key);
    const objects = this.datasets.objects;
    const ref = { what: `${key} in the datasets bucket`, tier: 'hot', lost: this.lost };
    return {
      ...where.object,
      open: (range) => getReferenced(objects, where.objectKey, ref, range),
      check: async () => {
        if (!(await objects.head(where.objectKey))) {
          this.lost(where.objectKey);
          throw new S3Error('InternalError', `the bytes of ${key} are missing from the object tier`);
        }
      },
    };
  }

  async put(actor: Actor, key: string, body: AsyncIterable<Uint8Array>, etag: () => string | undefined): Promise<S3Object> {
    const { dataset, file } = rawKey(key);
    try {
      const f = await this.datasets.putRawFile(actor, dataset, file, body);
      // The answer carries the body's MD5, which clients check (rclone does); listings give the
      // SHA-256 the catalog keeps, which no client mistakes for an MD5.
      return { key, size: f.size, etag: etag() ?? f.sha256, lastModified: new Date().toISOString() };
    } catch (err) {
      if (err instanceof Conflict) throw new S3Error('AccessDenied', err.message);
      if (err instanceof NotFound) throw new S3Error('NoSuchKey', `${err.message}; create it with POST /v1/datasets`);
      if (err instanceof InvalidInput) throw new S3Error('InvalidArgument', err.message);
      throw err;
    }
  }

  delete(): Promise<void> {
    return Promise.reject(new S3Error('AccessDenied', 'dataset raw files and versions are immutable'));
  }

  private find(key: string): { object: S3Object; objectKey: string } {
    const raw = /^([^/]+)\/raw\/(.+)$/.exec(key);
    const shard = /^([^/]+)\/v([1-9][0-9]{0,8})\/([^/]+)$/.exec(key);
    try {
      if (raw) {
        const d = this.datasets.get(raw[1]!);
        const f = this.datasets.files(raw[1]!).find((x) => x.file === raw[2]);
        if (f) return { object: { key, size: f.size, etag: f.sha256, lastModified: d.created_at }, objectKey: f.key };
      } else if (shard) {
        const v = this.datasets.version(shard[1]!, Number(shard[2]));
        const s = v.shards.find((x) => x.name === shard[3]);
        if (s) return { object: { key, size: s.bytes, etag: shardTag(s.path, s.bytes), lastModified: v.created_at }, objectKey: s.path };
      }
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
    }
    throw new S3Error('NoSuchKey', 'The specified key does not exist.');
  }
}

/** Shards are immutable and carry no digest in the catalog: their tag derives from where they are and their size. */
function shardTag(path: string, bytes: number): string {
  return createHash('sha256').update(`${path}\0${bytes}`).digest('hex');
}

/** {dataset}/raw/{file}, the only keys that can be written here. */
function rawKey(key: string): { dataset: string; file: string } {
  const m = /^([^/]+)\/raw\/(.+)$/.exec(key);
  if (!m) throw new S3Error('AccessDenied', 'only {dataset}/raw/{file} can be written in the datasets bucket; versions come from pipeline jobs');
  return { dataset: m[1]!, file: m[2]! };
}
