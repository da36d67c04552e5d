import { cachedPrepare, type OpenOptions, type RawStatement, type SqlDatabase } from './database.js';

// Deno loads only Node-API addons, and better-sqlite3 is built on nan, so under Deno the
// adapter uses the built-in `node:sqlite` (DatabaseSync), whose statements have the same
// run/get/all shape.

type DatabaseSync = {
  exec(sql: string): void;
  prepare(sql: string): RawStatement;
  close(): void;
};

export async function openNodeSqlite(path: string, options: OpenOptions): Promise<SqlDatabase> {
  const specifier = 'node:sqlite';
  const { DatabaseSync } = (await import(specifier)) as { DatabaseSync: new (p: string, o: object) => DatabaseSync };
  const raw = new DatabaseSync(path, { readOnly: options.readonly ?? false });
  return {
    path,
    driver: 'node:sqlite',
    exec: (sql) => raw.exec(sql),
    prepare: cachedPrepare((sql) => raw.prepare(sql)),
    close: () => raw.close(),
  };
}
