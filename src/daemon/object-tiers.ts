import { join } from 'node:path';
import { FsObjectStore } from '../engines/objects/fs-object-store.js';
import type { ObjectStore } from '../engines/objects/object-store.js';
import { S3ObjectStore } from '../engines/objects/s3-object-store.js';
import type { ObjectTierConfig } from './config.js';

/** Builds the object store a tier's config names; S3 buckets are created when missing. */
export async function openObjectTier(tier: string, cfg: ObjectTierConfig, dataDir: string): Promise<ObjectStore> {
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
