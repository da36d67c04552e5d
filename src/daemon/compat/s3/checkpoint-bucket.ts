import { InvalidInput, NotFound } from '../../../engines/errors.js';
import type { CheckpointStore } from '../../../engines/models/checkpoint-store.js';
import type { ModelRegistry } from '../../../engines/models/model-registry.js';
import { ID_PATTERN } from '../../../engines/models/model-schema.js';
import type { Actor } from '../../../engines/sql/writer.js';
import { S3Error } from './s3-error.js';
import { compareKeys, type ObjectLocation, type S3Bucket, type S3Multipart, type S3Object } from './s3-bucket.js';
import { multipart, storeErrors } from './s3-multipart.js';

// The `checkpoints` bucket: keys are {run}/{step}/{path}, step a non-negative integer written in
// decimal. Checkpoints have no open or final state: a PUT, or a multipart upload's completion,
// writes (or replaces) a file of a step, as the native API does. Copies and deletes are not
// offered (retention deletes checkpoints).

export class CheckpointBucket implements S3Bucket {
  readonly name = 'checkpoints';
  readonly readAccess = 'read' as const;
  readonly multipart: S3Multipart;

  constructor(
    private readonly checkpoints: CheckpointStore,
    private readonly models: ModelRegistry,
    readonly createdAt: string,
  ) {
    this.multipart = multipart(models.uploads, {
        kind: 'checkpoint',
        target: (key) => {
          const { run, step, path } = split(key);
          return { owner: run, version: String(step), path };
        },
        sink: (key, etag) => {
          const { run, step, path } = split(key);
          return { record: (tx, blob) => this.checkpoints.recordFile(tx, run, step, path, blob, etag) };
        },
      });
  }

  list(prefix: string): S3Object[] {
    const slash = prefix.indexOf('/');
    const runPrefix = slash === -1 ? prefix : prefix.slice(0, slash);
    return this.checkpoints
      .listFiles(runPrefix)
      .map((f) => ({ key: `${f.run}/${f.step}/${f.path}`, size: f.size, etag: f.etag ?? f.sha256, lastModified: f.created_at }))
      .filter((o) => o.key.startsWith(prefix))
      .sort((a, b) => compareKeys(a.key, b.key));
  }

  locate(key: string): ObjectLocation {
    const { run, step, path } = split(key);
    try {
      const f = this.checkpoints.locateFile(run, step, path);
      // Checkpoint files are blobs of the registry's, read (and cached) as model files are.
      const file = { key: f.key, sha256: f.sha256, size: f.size, tier: f.tier };
      return { key, size: f.size, etag: f.etag ?? f.sha256, lastModified: f.created_at ?? new Date(0).toISOString(), open: (range) => this.models.openFile(file, range), check: () => this.models.checkFile(file) };
    } catch (err) {
      if (err instanceof NotFound || err instanceof InvalidInput) throw new S3Error('NoSuchKey', 'The specified key does not exist.');
      throw err;
    }
  }

  async put(actor: Actor, key: string, body: AsyncIterable<Uint8Array>, etag: () => string | undefined, expectedSha256: string | undefined): Promise<S3Object> {
    const { run, step, path } = split(key);
    const f = await storeErrors(() => this.checkpoints.putFile(actor, run, step, path, body, expectedSha256, etag));
    return { key, size: f.size, etag: etag() ?? f.sha256, lastModified: new Date().toISOString() };
  }
}

function split(key: string): { run: string; step: number; path: string } {
  const a = key.indexOf('/');
  const b = a === -1 ? -1 : key.indexOf('/', a + 1);
  if (a === -1 || b === -1 || b === key.length - 1) throw new S3Error('NoSuchKey', 'keys in the checkpoints bucket are {run}/{step}/{path}');
  const run = key.slice(0, a);
  const stepText = key.slice(a + 1, b);
  const step = Number(stepText);
  if (!ID_PATTERN.test(run) || !/^(0|[1-9][0-9]{0,15})$/.test(stepText) || !Number.isSafeInteger(step)) throw new S3Error('NoSuchKey', 'a checkpoint key is {run}/{step}/{path}, the step a non-negative integer');
  return { run, step, path: key.slice(b + 1) };
}
