import S3rver from 's3rver';

// s3rver in a process of its own, for the benchmarks: in the load generator's process it
// shared one thread with the client it was serving, which measured that thread, not the
// daemon. Usage: node s3rver-server.js <directory> <bucket>; prints "s3rver port <n>".

const [directory, bucket] = process.argv.slice(2);
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: directory!, configureBuckets: [{ name: bucket!, configs: [] }] });
const { port } = (await server.run()) as { port: number };
process.stdout.write(`s3rver port ${port}\n`);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
