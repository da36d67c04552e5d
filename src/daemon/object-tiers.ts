import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FsObjectStore } from '../engines/objects/fs-object-store.js';
import type { ObjectStore } from '../engines/objects/object-store.js';
import { S3ObjectStore } from '../engines/objects/s3-object-store.js';
import type { ObjectTierConfig } from './config.js';
import type { Metrics } from './metrics.js';

/** Builds the object store a tier's config names; S3 buckets are created when missing. */
export async function openObjectTier(tier: string, cfg: ObjectTierConfig, dataDir: string, metrics?: Metrics): Promise<ObjectStore> {
  const store = await openDriver(tier, cfg, dataDir);
  return metrics ? metered(store, tier, metrics) : store;
}

/** Counts the bytes that cross a tier, in each direction, on the streams themselves. */
function metered(store: ObjectStore, tier: string, metrics: Metrics): ObjectStore {
  const incoming = metrics.objectTransferBytes.labels(tier, 'in');
  const outgoing = metrics.objectTransferBytes.labels(tier, 'out');
  return {
    name: store.name,
    async put(key, body, options) {
      async function* counted() {
        for await (const chunk of body) {
          incoming.inc(chunk.byteLength);
          yield chunk;
        }
      }
      return store.put(key, counted(), options);
    },
    async get(key, range) {
      const stream = await store.get(key, range);
      // A Transform, not a 'data' listener: a listener would start the flow before the caller reads.
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          outgoing.inc(chunk.length);
          done(null, chunk);
        },
      });
      pipeline(stream, counter).catch(() => undefined);
      return counter;
    },
    head: (key) => store.head(key),
    delete: (key) => store.delete(key),
    list: (prefix) => store.list(prefix),
    readVersioned: (key) => store.readVersioned(key),
    putIf: (key, body, condition) => store.putIf(key, body, condition),
    ...(store.sweepIncomplete ? { sweepIncomplete: (ms: number) => store.sweepIncomplete!(ms) } : {}),
    ...(store.slots
      ? {
          slots: {
            writeAt(key, offset, max, body, options) {
              async function* counted() {
                for await (const chunk of body) {
                  incoming.inc(chunk.byteLength);
                  yield chunk;
                }
              }
              return store.slots!.writeAt(key, offset, max, counted(), options);
            },
            seal: (from, size, key, options) => store.slots!.seal(from, size, key, options),
          },
        }
      : {}),
  };
}

async function openDriver(tier: string, cfg: ObjectTierConfig, dataDir: string): Promise<ObjectStore> {
  if (cfg.driver === 'fs') return new FsObjectStore(cfg.path ?? join(dataDir, 'objects', tier));
  const store = new S3ObjectStore({
    bucket: cfg.bucket,
    partSize: cfg.part_size_bytes,
    parallelParts: cfg.parallel_parts,
    client: {
      endPoint: cfg.endpoint,
      ...(cfg.port ? { port: cfg.port } : {}),
      useSSL: cfg.use_ssl,
      region: cfg.region,
      accessKey: cfg.access_key,
      secretKey: cfg.secret_key,
      pathStyle: cfg.path_style,
    },
  });
  await store.ensureBucket(cfg.region);
  return store;
}
