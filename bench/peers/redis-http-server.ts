import { createServer } from 'node:http';
import { Redis } from 'ioredis';

// The Redis peer: a bare node:http server in front of ioredis (auto-pipelined), with no auth
// and no validation. GET /k/<key> answers the bytes stored under the key (a cached read);
// POST /incr/<key> runs INCRBY by the body's token count (a usage counter).

const redis = new Redis(process.argv[2]!, { enableAutoPipelining: true });

const server = createServer((req, res) => {
  const [, verb, key] = req.url!.split('/');
  if (verb === 'k') {
    redis.getBuffer(key!).then(
      (v) => res.writeHead(v ? 200 : 404, { 'content-type': 'application/json' }).end(v ?? ''),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString()) as { input_tokens: number; output_tokens: number };
    redis.incrby(key!, body.input_tokens + body.output_tokens).then(
      (used) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ used_tokens: used })),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${(server.address() as { port: number }).port}\n`);
});
process.on('SIGTERM', () => server.close(() => redis.disconnect()));
