import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../../src/engines/sql/database.js';
import { applyMigrations } from '../../../src/engines/sql/migrations.js';
import { vectorMigrations } from '../../../src/engines/vectors/vector-store.js';

// A data dir written by 0.11 indexed only top-level metadata; the second vectors migration
// re-indexes every stored vector so nested paths and nulls are filterable after an upgrade.

describe('vector migrations', () => {
  it('re-indexes the metadata of existing vectors by dotted path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-vmig-'));
    try {
      const db = await openDatabase(join(dir, 'v.db'));
      applyMigrations(db, vectorMigrations.slice(0, 1));
      db.prepare("INSERT INTO collections (name, dimensions, metric, dtype, connectivity, expansion_add, expansion_search, created_at) VALUES ('c', 2, 'cos', 'f32', 16, 64, 64, 'now')").run();
      const put = db.prepare("INSERT INTO vectors (collection, id, key, vec, metadata) VALUES ('c', ?, ?, ?, ?)");
      for (let i = 1; i <= 1500; i++) put.run(String(i), i, new Uint8Array(8), JSON.stringify({ top: i, doc: { source: `s${i % 3}` }, gone: null }));
      put.run('none', 2000, new Uint8Array(8), null);
      db.prepare("INSERT INTO vector_meta (collection, key, field, kind, t, n) VALUES ('c', 1, 'top', 'n', NULL, 1)").run();
      expect(applyMigrations(db, vectorMigrations)).toBe(1);
      const count = (sql: string) => db.prepare<{ n: number }>(`SELECT COUNT(*) AS n FROM vector_meta WHERE ${sql}`).get()!.n;
      expect(count("field = 'top'")).toBe(1500);
      expect(count("field = 'doc.source' AND t = 's1'")).toBe(500);
      expect(count("field = 'gone' AND kind = 'z'")).toBe(1500);
      expect(db.prepare<{ props: string }>("SELECT props FROM collections WHERE name = 'c'").get()!.props).toBe('{}');
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
