import S3rver from 's3rver';
import { tempDir } from './daemon.js';

// A real S3 protocol server, in-process, on a free port.
//
// s3rver 3.7 ignores If-None-Match and If-Match on PUT, which AWS S3 (since 2024) and MinIO
// honour. With `conditionalWrites` (the default) a middleware in front of s3rver's own adds
// exactly that documented behaviour — 412 PreconditionFailed when the condition fails, 404
// NoSuchKey for If-Match on an absent key — with the check and the write serialised per key,
// as the real servers make them atomic. `conditionalWrites: false` keeps s3rver as it ships,
// to test that the lease refuses a store that would silently ignore its conditions.

type KoaContext = {
  method: string;
  path: string;
  status: number;
  type: string;
  body: unknown;
  get(header: string): string;
};
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;
type S3rverStore = { existsObject(b: string, k: string): Promise<boolean>; getMetadata(b: string, k: string): Promise<{ etag: string }> };

export async function startS3rver(buckets: string[], options: { conditionalWrites?: boolean } = {}) {
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: tempDir('strata-s3rver-'),
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  });
  if (options.conditionalWrites !== false) {
    const internals = server as unknown as { middleware: Middleware[]; store: S3rverStore };
    internals.middleware.unshift(conditionalPuts(internals.store));
  }
  const { port } = (await server.run()) as { port: number };
  return {
    port,
    client: { endPoint: '127.0.0.1', port, useSSL: false, accessKey: 'S3RVER', secretKey: 'S3RVER', pathStyle: true, region: 'us-east-1' },
    close: () => server.close(),
  };
}

function conditionalPuts(store: S3rverStore): Middleware {
  const queues = new Map<string, Promise<void>>();
  const error = (ctx: KoaContext, status: number, code: string, message: string) => {
    ctx.status = status;
    ctx.type = 'application/xml';
    ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  };
  return async (ctx, next) => {
    const ifNoneMatch = ctx.get('if-none-match');
    const ifMatch = ctx.get('if-match');
    if (ctx.method !== 'PUT' || (!ifNoneMatch && !ifMatch)) return next();
    const [, bucket = '', ...rest] = ctx.path.split('/');
    const key = decodeURIComponent(rest.join('/'));
    const id = `${bucket}/${key}`;
    const previous = queues.get(id) ?? Promise.resolve();
    const turn = previous.then(async () => {
      const exists = await store.existsObject(bucket, key);
      if (ifNoneMatch === '*' && exists) return error(ctx, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
      if (ifMatch) {
        if (!exists) return error(ctx, 404, 'NoSuchKey', 'The specified key does not exist.');
        if ((await store.getMetadata(bucket, key)).etag !== ifMatch) {
          return error(ctx, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
        }
      }
      await next();
    });
    const settled = turn.catch(() => undefined);
    queues.set(id, settled);
    try {
      await turn;
    } finally {
      if (queues.get(id) === settled) queues.delete(id);
    }
  };
}
