import { InvalidInput, NotFound } from '../errors.js';
import type { ChangeLog, ChangeType } from '../sql/change-log.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Migration } from '../sql/migrations.js';
import type { Actor, Writer } from '../sql/writer.js';

// The knowledge graph: entities and typed, directed relations in SQLite, written through the
// change log. Traversals are breadth-first with SQL lookups per level, bounded in depth and
// in the number of entities visited, so a hub with millions of edges cannot run away with a
// request. An entity may point at a vector (collection + id), which lets a vector query
// answer with entities.

export const graphMigrations: Migration[] = [
  {
    engine: 'graph',
    version: 1,
    name: 'entities and relations',
    sql: `
      CREATE TABLE entities (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        props TEXT,
        collection TEXT,
        vector_id TEXT,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX entities_by_vector ON entities (collection, vector_id) WHERE collection IS NOT NULL;
      CREATE TABLE relations (
        src TEXT NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        dst TEXT NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
        props TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (src, type, dst)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX relations_in ON relations (dst, type, src);
    `,
  },
];

export interface Entity {
  id: string;
  type: string;
  name: string;
  props: Record<string, unknown> | null;
  vector: { collection: string; id: string } | null;
}

export interface Relation {
  from: string;
  type: string;
  to: string;
  props: Record<string, unknown> | null;
}

export type Direction = 'out' | 'in' | 'both';

interface EntityRow {
  id: string;
  type: string;
  name: string;
  props: string | null;
  collection: string | null;
  vector_id: string | null;
  updated_at: string;
}

interface RelationRow {
  src: string;
  type: string;
  dst: string;
  props: string | null;
}

/** Upper bound on entities one traversal may visit. */
export const MAX_VISITED = 10_000;
/** Relations one neighbourhood answer carries; past it the answer says `truncated: true`. */
export const MAX_RELATIONS = 10_000;

export class KnowledgeGraph {
  private readonly entitiesUpserted: ChangeType<{ entities: EntityRow[] }>;
  private readonly relationsUpserted: ChangeType<{ relations: Array<RelationRow & { updated_at: string }> }>;

  constructor(
    private readonly db: SqlDatabase,
    changes: ChangeLog,
    private readonly writer: Writer,
  ) {
    this.entitiesUpserted = changes.define('graph', 'upsert_entities', (db, p) => {
      const put = db.prepare(
        `INSERT INTO entities (id, type, name, props, collection, vector_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET type = excluded.type, name = excluded.name, props = excluded.props,
           collection = excluded.collection, vector_id = excluded.vector_id, updated_at = excluded.updated_at`,
      );
      for (const e of p.entities) put.run(e.id, e.type, e.name, e.props, e.collection, e.vector_id, e.updated_at);
    });
    this.relationsUpserted = changes.define('graph', 'upsert_relations', (db, p) => {
      const put = db.prepare(
        `INSERT INTO relations (src, type, dst, props, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (src, type, dst) DO UPDATE SET props = excluded.props, updated_at = excluded.updated_at`,
      );
      for (const r of p.relations) put.run(r.src, r.type, r.dst, r.props, r.updated_at);
    });
  }

  async upsertEntities(actor: Actor, entities: Array<{ id: string; type: string; name: string; props?: Record<string, unknown> | undefined; vector?: { collection: string; id?: string | undefined } | undefined }>): Promise<{ upserted: number }> {
    const now = new Date().toISOString();
    const rows: EntityRow[] = entities.map((e) => ({
      id: e.id,
      type: e.type,
      name: e.name,
      props: e.props === undefined ? null : JSON.stringify(e.props),
      collection: e.vector?.collection ?? null,
      vector_id: e.vector ? (e.vector.id ?? e.id) : null,
      updated_at: now,
    }));
    await this.writer.write(actor, (tx) => {
      tx.apply(this.entitiesUpserted, { entities: rows });
      tx.audit('graph.upsert_entities', 'graph', { count: rows.length });
    });
    return { upserted: rows.length };
  }

  async upsertRelations(actor: Actor, relations: Array<{ from: string; type: string; to: string; props?: Record<string, unknown> | undefined }>): Promise<{ upserted: number }> {
    const now = new Date().toISOString();
    await this.writer.write(actor, (tx) => {
      const exists = this.db.prepare('SELECT 1 AS one FROM entities WHERE id = ?');
      relations.forEach((r, i) => {
        for (const end of [r.from, r.to]) {
          if (!exists.get(end)) throw new InvalidInput(`relations[${i}]: entity ${end} does not exist`);
        }
      });
      tx.apply(this.relationsUpserted, {
        relations: relations.map((r) => ({ src: r.from, type: r.type, dst: r.to, props: r.props === undefined ? null : JSON.stringify(r.props), updated_at: now })),
      });
      tx.audit('graph.upsert_relations', 'graph', { count: relations.length });
    });
    return { upserted: relations.length };
  }

  entity(id: string): Entity & { relations: { out: number; in: number } } {
    const row = this.db.prepare<EntityRow>('SELECT * FROM entities WHERE id = ?').get(id);
    if (!row) throw new NotFound(`entity ${id} does not exist`);
    const out = this.db.prepare<{ n: number }>('SELECT COUNT(*) AS n FROM relations WHERE src = ?').get(id)!.n;
    const inn = this.db.prepare<{ n: number }>('SELECT COUNT(*) AS n FROM relations WHERE dst = ?').get(id)!.n;
    return { ...publicEntity(row), relations: { out, in: inn } };
  }

  /** Entities within `depth` hops (not the start), and the relations crossed to reach them. */
  neighbors(id: string, options: { depth: number; type?: string | undefined; direction: Direction }): { entities: Entity[]; relations: Relation[]; truncated?: true } {
    this.entity(id);
    const seen = new Set([id]);
    const relations = new Map<string, Relation>();
    let frontier = [id];
    let truncated = false;
    for (let level = 0; level < options.depth && frontier.length > 0 && seen.size < MAX_VISITED && !truncated; level++) {
      const next: string[] = [];
      for (const node of frontier) {
        for (const r of this.edges(node, options.direction, options.type)) {
          // Edges are bounded like nodes: a 300-node clique was 90k relations and 95 MB per answer.
          if (relations.size >= MAX_RELATIONS) {
            truncated = true;
            break;
          }
          relations.set(`${r.src}\u0000${r.type}\u0000${r.dst}`, publicRelation(r));
          const other = r.src === node ? r.dst : r.src;
          if (!seen.has(other) && seen.size < MAX_VISITED) {
            seen.add(other);
            next.push(other);
          }
        }
        if (truncated) break;
      }
      frontier = next;
    }
    seen.delete(id);
    return { entities: this.entitiesByIds([...seen]), relations: [...relations.values()], ...(truncated ? { truncated: true as const } : {}) };
  }

  /** The shortest path (fewest relations) as [entity, relation, entity, ...]; NotFound when none within maxDepth. */
  path(from: string, to: string, options: { maxDepth: number; direction: Direction; type?: string | undefined }): Array<({ kind: 'entity' } & Entity) | ({ kind: 'relation' } & Relation)> {
    this.entity(from);
    this.entity(to);
    const parent = new Map<string, { prev: string; rel: RelationRow } | null>([[from, null]]);
    let frontier = [from];
    for (let level = 0; level < options.maxDepth && !parent.has(to) && frontier.length > 0 && parent.size < MAX_VISITED; level++) {
      const next: string[] = [];
      for (const node of frontier) {
        for (const r of this.edges(node, options.direction, options.type)) {
          const other = r.src === node ? r.dst : r.src;
          if (parent.has(other)) continue;
          parent.set(other, { prev: node, rel: r });
          next.push(other);
        }
      }
      frontier = next;
    }
    if (!parent.has(to)) throw new NotFound(`no path from ${from} to ${to} within ${options.maxDepth} relations`);
    const steps: Array<{ id: string; rel?: RelationRow }> = [];
    for (let at: string | undefined = to; at !== undefined; ) {
      const p = parent.get(at);
      steps.unshift({ id: at, ...(p ? { rel: p.rel } : {}) });
      at = p?.prev;
    }
    const entities = new Map(this.entitiesByIds(steps.map((s) => s.id)).map((e) => [e.id, e]));
    const out: Array<({ kind: 'entity' } & Entity) | ({ kind: 'relation' } & Relation)> = [];
    for (const s of steps) {
      if (s.rel) out.push({ kind: 'relation', ...publicRelation(s.rel) });
      out.push({ kind: 'entity', ...entities.get(s.id)! });
    }
    return out;
  }

  /** Entities that carry the given vectors of a collection, by vector id. */
  entitiesForVectors(collection: string, vectorIds: string[]): Map<string, Entity> {
    const get = this.db.prepare<EntityRow>('SELECT * FROM entities WHERE collection = ? AND vector_id = ?');
    const out = new Map<string, Entity>();
    for (const v of vectorIds) {
      const row = get.get(collection, v);
      if (row) out.set(v, publicEntity(row));
    }
    return out;
  }

  private edges(node: string, direction: Direction, type: string | undefined): RelationRow[] {
    const t = type === undefined ? '' : ' AND type = ?';
    const args = type === undefined ? [node] : [node, type];
    const out = direction !== 'in' ? this.db.prepare<RelationRow>(`SELECT src, type, dst, props FROM relations WHERE src = ?${t} LIMIT ${MAX_RELATIONS + 1}`).all(...args) : [];
    const inn = direction !== 'out' ? this.db.prepare<RelationRow>(`SELECT src, type, dst, props FROM relations WHERE dst = ?${t} LIMIT ${MAX_RELATIONS + 1}`).all(...args) : [];
    return [...out, ...inn];
  }

  private entitiesByIds(ids: string[]): Entity[] {
    const get = this.db.prepare<EntityRow>('SELECT * FROM entities WHERE id = ?');
    return ids.map((id) => get.get(id)).filter((r): r is EntityRow => r !== undefined).map(publicEntity);
  }
}

function publicEntity(r: EntityRow): Entity {
  return {
    id: r.id,
    type: r.type,
    name: r.name,
    props: r.props ? (JSON.parse(r.props) as Record<string, unknown>) : null,
    vector: r.collection && r.vector_id ? { collection: r.collection, id: r.vector_id } : null,
  };
}

function publicRelation(r: RelationRow): Relation {
  return { from: r.src, type: r.type, to: r.dst, props: r.props ? (JSON.parse(r.props) as Record<string, unknown>) : null };
}
