import { createRequire } from 'node:module';
import { cachedPrepare, type OpenOptions, type RawStatement, type SqlDatabase } from './database.js';

// Loaded with require so that merely importing database.ts under Bun never touches the
// native addon (better-sqlite3 does not load there).
const require = createRequire(import.meta.url);

type BetterDatabase = {
  exec(sql: string): void;
  prepare(sql: string): RawStatement;
  close(): void;
};

export async function openBetterSqlite3(path: string, options: OpenOptions): Promise<SqlDatabase> {
  const Database = require('better-sqlite3') as new (p: string, o: object) => BetterDatabase;
  const readonly = options.readonly ?? false;
  const raw = new Database(path, { readonly, fileMustExist: readonly });
  return {
    path,
    driver: 'better-sqlite3',
    exec: (sql) => raw.exec(sql),
    prepare: cachedPrepare((sql) => raw.prepare(sql)),
    close: () => raw.close(),
  };
}
