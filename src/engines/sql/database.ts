// The small SQLite interface every engine uses. Three drivers stand behind it:
// better-sqlite3 under Node, bun:sqlite under Bun (better-sqlite3 does not load there) and
// node:sqlite under Deno (which loads only Node-API addons; better-sqlite3 is not one). Only positional `?` parameters are used: the two drivers disagree on named-parameter
// prefixes, and plain positions keep statements portable.

export type SqlValue = string | number | bigint | Uint8Array | null;

export interface RunResult {
  changes: number;
  lastInsertRowid: number | bigint;
}

export interface SqlStatement<Row = Record<string, unknown>> {
  run(...params: SqlValue[]): RunResult;
  get(...params: SqlValue[]): Row | undefined;
  all(...params: SqlValue[]): Row[];
}

export interface SqlDatabase {
  readonly path: string;
  readonly driver: 'better-sqlite3' | 'bun:sqlite' | 'node:sqlite';
  /** Runs one or more statements without parameters (DDL, PRAGMA, BEGIN/COMMIT). */
  exec(sql: string): void;
  /** Prepared statements are cached per SQL text: call this freely on hot paths. */
  prepare<Row = Record<string, unknown>>(sql: string): SqlStatement<Row>;
  close(): void;
}

export interface OpenOptions {
  readonly?: boolean;
}

export function isBun(): boolean {
  return typeof (process.versions as Record<string, string | undefined>).bun === 'string';
}

export function isDeno(): boolean {
  return typeof (process.versions as Record<string, string | undefined>).deno === 'string';
}

export async function openDatabase(path: string, options: OpenOptions = {}): Promise<SqlDatabase> {
  const db = isBun()
    ? await (await import('./bun-sqlite-driver.js')).openBunSqlite(path, options)
    : isDeno()
      ? await (await import('./node-sqlite-driver.js')).openNodeSqlite(path, options)
      : await (await import('./better-sqlite3-driver.js')).openBetterSqlite3(path, options);
  if (!options.readonly) configure(db);
  return db;
}

// WAL lets readers run beside the single writer. synchronous=FULL fsyncs the WAL at every
// commit, so an acknowledged write survives kill -9 and power loss alike; group commit (see
// writer.ts) pays that fsync once per batch instead of once per request.
function configure(db: SqlDatabase): void {
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = FULL');
  db.exec('PRAGMA foreign_keys = ON');
  db.exec('PRAGMA busy_timeout = 5000');
  // Keep the WAL from growing without bound between checkpoints on write-heavy nodes.
  db.exec('PRAGMA wal_autocheckpoint = 4000');
}

/** What both drivers' native statements look like, before adaptation. */
export interface RawStatement {
  run(...params: unknown[]): RunResult;
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

/**
 * Wraps a driver's prepare in a per-SQL-text cache. Preparing costs more than most of the
 * statements Strata runs, and both drivers allow a statement to be reused forever.
 */
export function cachedPrepare(prepareRaw: (sql: string) => RawStatement) {
  const cache = new Map<string, SqlStatement<never>>();
  return function prepare<Row>(sql: string): SqlStatement<Row> {
    let stmt = cache.get(sql) as SqlStatement<Row> | undefined;
    if (!stmt) {
      const s = prepareRaw(sql);
      stmt = {
        run: (...p: SqlValue[]) => s.run(...p),
        // bun:sqlite answers null for "no row"; the interface says undefined.
        get: (...p: SqlValue[]) => (s.get(...p) ?? undefined) as Row | undefined,
        all: (...p: SqlValue[]) => s.all(...p) as Row[],
      };
      cache.set(sql, stmt as SqlStatement<never>);
    }
    return stmt;
  };
}
