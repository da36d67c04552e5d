import { createServer } from 'node:http';
import { createRequire } from 'node:module';

// The peer for http_write: a bare node:http server that inserts each JSON body into SQLite
// with better-sqlite3, one autocommit transaction per request, under the same durability
// settings Strata uses (WAL, synchronous=FULL). No auth, no validation, no change log, no audit.

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof import('better-sqlite3');
const db = new Database(process.argv[2]!);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec('CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, body TEXT NOT NULL)');
const insert = db.prepare('INSERT INTO users (id, body) VALUES (?, ?)');

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { id: string };
      insert.run(body.id, JSON.stringify(body));
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    } catch (err) {
      res.writeHead(400).end(String(err));
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address() as { port: number };
  process.stdout.write(`listening http://127.0.0.1:${address.port}\n`);
});
process.on('SIGTERM', () => server.close(() => db.close()));
