import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestNode } from '../helpers/node.js';

// The systematic pass over client text: every route that takes a JSON body, as the daemon's
// own /openapi.json describes it, gets a body whose every string field holds 1 MiB of an
// adversarial shape (and every other field a plain valid value). Whatever the route makes of
// it — 2xx, or a 4xx naming the field — it must never be a 5xx, and the process must keep
// answering. Routes are found from the document, so a new route is covered without editing
// this test.

type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  additionalProperties?: Schema | boolean;
};

const MiB = 1024 * 1024;
const SHAPES: Record<string, (n: number) => string> = {
  letters: (n) => 'y'.repeat(n),
  'a@': (n) => 'a@'.repeat(Math.ceil(n / 2)).slice(0, n),
  'a@b.': (n) => 'a@b.'.repeat(Math.ceil(n / 4)).slice(0, n),
  dots: (n) => '.'.repeat(n),
  'digit-space': (n) => '1 '.repeat(Math.ceil(n / 2)).slice(0, n),
  'hex-colon': (n) => 'a:'.repeat(Math.ceil(n / 2)).slice(0, n),
};

/** Values that name what the setup below created, or that a route's own rules need. */
const KNOWN: Record<string, unknown> = { user_id: 'u1', version: 'v1', from: 'e1', to: 'e1', chosen: 0, amount_micros: 5, score: 5, dimensions: 1, top_k: 1, weight: 100, metric: 'cos' };

/** A short value the field accepts, so that only the field under attack is hostile. */
function plain(schema: Schema, name: string): unknown {
  if (name in KNOWN) return KNOWN[name];
  if (schema.format === 'email') return 'a@example.com';
  if (schema.format === 'uri' || schema.format === 'url') return 'http://127.0.0.1:1';
  if (schema.format === 'uuid') return '00000000-0000-4000-8000-000000000000';
  const candidates = ['x1', 'USD', 'free', 'user', '2026-01-01', 'a'];
  return (schema.pattern && candidates.find((c) => new RegExp(schema.pattern!).test(c))) || 'x1';
}

/**
 * A valid-looking value of the schema, with the string at `target` (a path of property
 * names; '*' for array items and free-form keys) replaced by `hostile`. `paths` collects
 * every string leaf it meets.
 */
function fill(schema: Schema | undefined, target: string, hostile: (max: number | undefined) => string, paths: string[], at = '', depth = 0): unknown {
  if (!schema || depth > 6) return 'x1';
  if (schema.const !== undefined) return schema.const;
  if (schema.enum) return schema.enum[0];
  const alt = schema.anyOf ?? schema.oneOf;
  if (alt) return fill(alt.find((s) => s.type !== 'null') ?? alt[0], target, hostile, paths, at, depth + 1);
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  switch (type) {
    case 'string':
      paths.push(at);
      return at === target ? hostile(schema.maxLength) : plain(schema, at.slice(at.lastIndexOf('.') + 1));
    case 'integer':
    case 'number':
      return KNOWN[at.slice(at.lastIndexOf('.') + 1)] ?? Math.max(1, schema.minimum ?? 1);
    case 'boolean':
      return true;
    case 'array':
      // Two items: some routes need more than one (a comparison's responses).
      return [fill(schema.items, target, hostile, paths, `${at}.*`, depth + 1), fill(schema.items, target, hostile, [], `${at}.*`, depth + 1)];
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(schema.properties ?? {})) out[k] = fill(v, target, hostile, paths, `${at}.${k}`, depth + 1);
      if (!schema.properties && schema.additionalProperties !== false) {
        paths.push(`${at}.*`);
        out['key'] = at + '.*' === target ? hostile(undefined) : 'x1';
      }
      return out;
    }
    default:
      paths.push(at);
      return at === target ? hostile(undefined) : 'x1';
  }
}

describe('1 MiB adversarial strings in every field of every JSON route', () => {
  let t: Awaited<ReturnType<typeof openTestNode>>;
  beforeAll(async () => {
    t = await openTestNode(['security.rate_limit.requests_per_second=0']);
    await t.call('POST', '/v1/users', { id: 'u1', email: 'u1@example.com', tier: 'free' });
    await t.call('POST', '/v1/collections', { name: 'c', dimensions: 1, metric: 'cos' });
    await t.call('PUT', '/v1/models/m', {});
    await t.call('POST', '/v1/models/m/versions', { version: 'v1' });
    await t.call('POST', '/v1/graph/entities', { entities: [{ id: 'e1', type: 't', name: 'n' }] });
    await t.call('POST', '/v1/datasets', { name: 'c' });
  });
  afterAll(() => t.close());

  it('answers every one without a 5xx, and stays up', async () => {
    const doc = (await t.call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Schema }> } }>> };
    const conv = (await t.call('POST', '/v1/conversations', { user_id: 'u1' })).body.id as string;
    const ids: Record<string, string> = { user_id: 'u1', id: conv, model: 'm', version: 'v1', name: 'c', alias: 'a', run: 'r', step: '1', job_id: 'j', tier: 'hot' };
    let routes = 0;
    let requests = 0;
    const failures: string[] = [];
    for (const [template, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const schema = op.requestBody?.content['application/json']?.schema;
        if (!schema) continue;
        // Replication, promotion and token routes change the node's role or its callers; they take no client text.
        if (/\/replication\/|\/promote|\/admin\/tokens/.test(template)) continue;
        routes++;
        const path = template.replace(/\{([^}]+)\}/g, (_, p: string) => ids[p] ?? 'x');
        const fields: string[] = [];
        fill(schema, '', () => '', fields);
        for (const field of fields) {
          for (const [shape, make] of Object.entries(SHAPES)) {
            // As long as the field accepts (the most a client can make the daemon chew on), and
            // past that, to attack validation itself.
            for (const clamp of [true, false]) {
              const body = fill(schema, field, (max) => make(clamp ? Math.min(MiB - 4096, max ?? MiB) : MiB), []);
              const r = await t.call(method.toUpperCase(), path, body);
              requests++;
              if (r.status >= 500) failures.push(`${method.toUpperCase()} ${path} ${field} (${shape}): ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
            }
          }
        }
      }
    }
    expect(routes).toBeGreaterThan(20);
    expect(requests).toBeGreaterThan(routes * 12);
    expect(failures).toEqual([]);
    expect((await t.call('GET', '/healthz')).status).toBe(200);
  });
});
