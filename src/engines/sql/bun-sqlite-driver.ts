import { cachedPrepare, type OpenOptions, type RawStatement, type SqlDatabase } from './database.js';

type BunDatabase = {
  exec(sql: string): void;
  prepare(sql: string): RawStatement;
  close(throwOnError?: boolean): void;
};

export async function openBunSqlite(path: string, options: OpenOptions): Promise<SqlDatabase> {
  // The specifier is a variable so that tsc and Node never try to resolve it.
  const specifier = 'bun:sqlite';
  const { Database } = (await import(specifier)) as { Database: new (p: string, o: object) => BunDatabase };
  const raw = options.readonly
    ? new Database(path, { readonly: true })
    : new Database(path, { create: true, readwrite: true });
  return {
    path,
    driver: 'bun:sqlite',
    exec: (sql) => raw.exec(sql),
    prepare: cachedPrepare((sql) => raw.prepare(sql)),
    close: () => raw.close(false),
  };
}
