import S3rver from 's3rver';
import { tempDir } from './daemon.js';

// A real S3 protocol server, in-process, on a free port.

export async function startS3rver(buckets: string[]) {
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: tempDir('strata-s3rver-'),
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  });
  const { port } = (await server.run()) as { port: number };
  return {
    port,
    client: { endPoint: '127.0.0.1', port, useSSL: false, accessKey: 'S3RVER', secretKey: 'S3RVER', pathStyle: true, region: 'us-east-1' },
    close: () => server.close(),
  };
}
