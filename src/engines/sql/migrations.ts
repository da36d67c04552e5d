import type { SqlDatabase } from './database.js';

/**
 * A schema step owned by one engine. Versions are numbered per engine from 1 and never
 * edited once released: a change to a table is a new migration. Migrations are schema, not
 * data, so they are not written to the change log: every node runs the same code and so the
 * same migrations.
 */
export interface Migration {
  engine: string;
  version: number;
  name: string;
  sql: string;
  /**
   * A step over the rows, after `sql`, in the same transaction: only for derived rows every
   * node computes the same way from data it already holds (an index table rebuilt).
   */
  run?: (db: SqlDatabase) => void;
}

export function applyMigrations(db: SqlDatabase, migrations: readonly Migration[]): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    engine TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (engine, version)
  ) STRICT`);
  const applied = new Set(
    db
      .prepare<{ engine: string; version: number }>('SELECT engine, version FROM schema_migrations')
      .all()
      .map((r) => `${r.engine}:${r.version}`),
  );
  let count = 0;
  for (const m of migrations) {
    if (applied.has(`${m.engine}:${m.version}`)) continue;
    db.exec('BEGIN IMMEDIATE');
    try {
      db.exec(m.sql);
      m.run?.(db);
      db.prepare('INSERT INTO schema_migrations (engine, version, name, applied_at) VALUES (?, ?, ?, ?)').run(
        m.engine,
        m.version,
        m.name,
        new Date().toISOString(),
      );
      db.exec('COMMIT');
      count++;
    } catch (err) {
      db.exec('ROLLBACK');
      throw new Error(`migration ${m.engine} #${m.version} (${m.name}) failed: ${(err as Error).message}`, { cause: err });
    }
  }
  return count;
}
