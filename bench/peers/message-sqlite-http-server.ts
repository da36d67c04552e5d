import { createServer } from 'node:http';
import { createRequire } from 'node:module';

// The peer for message_append: a bare node:http server inserting each message into SQLite with
// better-sqlite3 — one autocommit transaction per request, WAL + synchronous=FULL like Strata —
// and nothing else: no auth, no validation, no seq counter, no change log, no audit, no cache.

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof import('better-sqlite3');
const db = new Database(process.argv[2]!);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`CREATE TABLE IF NOT EXISTS messages (
  conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
  tokens INTEGER NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (conversation_id, seq)) WITHOUT ROWID`);
const insert = db.prepare('INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)');
const seqs = new Map<string, number>();

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      const conv = req.url!.split('/')[2]!;
      const m = JSON.parse(Buffer.concat(chunks).toString()) as { role: string; content: string; tokens: number };
      const seq = (seqs.get(conv) ?? 0) + 1;
      seqs.set(conv, seq);
      const created_at = new Date().toISOString();
      insert.run(conv, seq, m.role, m.content, m.tokens, created_at);
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ items: [{ seq, ...m, created_at }] }));
    } catch (err) {
      res.writeHead(400).end(String(err));
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${(server.address() as { port: number }).port}\n`);
});
process.on('SIGTERM', () => server.close(() => db.close()));
