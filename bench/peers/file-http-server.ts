import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

// The peer for model_upload and model_download_hit: a bare node:http server that writes a PUT
// body to a file (fsync at the end, as Strata does) and serves GET from a file with a pipe —
// in 1 MiB reads with ?read=1m (issue 19's peer for a native client), else Node's default 64 KiB.

const dir = process.argv[2]!;
const server = createServer((req, res) => {
  const path = join(dir, 'file.bin');
  if (req.method === 'PUT') {
    pipeline(req, createWriteStream(path))
      .then(async () => {
        const fh = await open(path, 'r');
        await fh.sync();
        await fh.close();
        res.writeHead(201).end();
      })
      .catch((err: unknown) => res.writeHead(500).end(String(err)));
    return;
  }
  res.writeHead(200, { 'content-length': statSync(path).size, 'content-type': 'application/octet-stream' });
  createReadStream(path, req.url?.includes('read=1m') ? { highWaterMark: 1024 * 1024 } : {}).pipe(res);
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening http://127.0.0.1:${(server.address() as { port: number }).port}\n`));
process.on('SIGTERM', () => server.close());
