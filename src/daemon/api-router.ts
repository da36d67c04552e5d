import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { zodRefusal } from '../engines/zod-refusal.js';
import type { AppEnv, Caller } from './app-env.js';
import { authenticate, authorize, type Access } from './auth.js';
import { readBody, readRawBody, type BodyLimits, type RawBody } from './json-body.js';
import type { RateLimiter } from './rate-limiter.js';
import { Unauthorized } from '../engines/errors.js';
import type { TokenStore } from '../engines/auth/token-store.js';

// Every API route is declared through ApiRouter.route(): the same zod schemas validate the
// request and produce /openapi.json, so the document cannot drift from what is enforced.
// The wrapper also checks the bearer token and the route's access level before the handler
// runs, and records the route template for metrics and logs.

type Method = 'get' | 'head' | 'post' | 'put' | 'patch' | 'delete';

export interface RouteSpec<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType, D = z.infer<B>> {
  method: Method;
  /** Hono path syntax: `/v1/users/:user_id`. */
  path: string;
  summary: string;
  tag: string;
  access: Access;
  params?: P;
  query?: Q;
  body?: B;
  /** The body may also be MessagePack (bulk endpoints, per API.md). */
  msgpack?: boolean;
  /**
   * Decodes and validates the raw body in place of the router (after auth, params and query):
   * for bulk bodies that are decoded off the event loop. `body` still documents it.
   */
  decode?: (raw: RawBody, input: { params: z.infer<P>; limits: BodyLimits }) => Promise<D>;
  /** Status → description and (optionally) the response body's schema. */
  responses: Record<number, { description: string; schema?: z.ZodType }>;
}

export interface RouteInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  /** Undefined only on public routes. */
  caller: Caller;
}

type Handler<P, Q, B> = (c: Context<AppEnv>, input: RouteInput<P, Q, B>) => Response | Promise<Response>;

const noInput = z.object({});

export class ApiRouter {
  private readonly specs: RouteSpec<z.ZodType, z.ZodType, z.ZodType>[] = [];

  constructor(
    private readonly app: Hono<AppEnv>,
    private readonly tokens: TokenStore,
    private readonly bodyLimits: BodyLimits,
    private readonly guards: { rateLimiter?: RateLimiter; authFailed?(reason: 'missing' | 'invalid'): void } = {},
  ) {}

  route<P extends z.ZodType = typeof noInput, Q extends z.ZodType = typeof noInput, B extends z.ZodType = z.ZodUndefined, D = z.infer<B>>(
    spec: RouteSpec<P, Q, B, D>,
    handler: Handler<z.infer<P>, z.infer<Q>, D>,
  ): void {
    this.specs.push(spec as unknown as RouteSpec<z.ZodType, z.ZodType, z.ZodType>);
    this.app.on(spec.method.toUpperCase(), spec.path, async (c) => {
      c.set('route', spec.path);
      // Authentication comes before validation, so an anonymous caller learns nothing from
      // validation messages.
      let caller: Caller | undefined;
      if (spec.access !== 'public') {
        try {
          caller = authenticate(c, this.tokens);
        } catch (err) {
          if (err instanceof Unauthorized) this.guards.authFailed?.(c.req.header('authorization') ? 'invalid' : 'missing');
          throw err;
        }
        c.set('caller', caller);
        authorize(caller, spec.access);
        this.guards.rateLimiter?.take(caller.tokenId);
      }
      // A route without a params or query schema has nothing to validate: skip the parsing.
      const params = spec.params ? validate('path', spec.params, c.req.param()) : {};
      const query = spec.query ? validate('query', spec.query, c.req.query()) : {};
      const body = spec.decode
        ? await spec.decode(await readRawBody(c, this.bodyLimits, spec.msgpack === true), { params: params as z.infer<P>, limits: this.bodyLimits })
        : spec.body
          ? validate('body', spec.body, await readBody(c, this.bodyLimits, spec.msgpack === true))
          : undefined;
      return handler(c, { params, query, body, caller: caller as Caller } as RouteInput<z.infer<P>, z.infer<Q>, D>);
    });
  }

  openapi(info: { title: string; version: string }): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const s of this.specs) {
      const path = s.path.replace(/:([A-Za-z_][A-Za-z0-9_]*)(\{[^}]*\})?/g, '{$1}');
      const parameters = [
        ...objectFields(s.params).map(([name, schema]) => ({ name, in: 'path', required: true, schema })),
        ...objectFields(s.query).map(([name, schema, required]) => ({ name, in: 'query', required, schema })),
      ];
      (paths[path] ??= {})[s.method] = {
        summary: s.summary,
        tags: [s.tag],
        ...(s.access === 'public' ? { security: [] } : { 'x-strata-access': s.access }),
        ...(parameters.length ? { parameters } : {}),
        ...(s.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(s.body) } } } } : {}),
        responses: Object.fromEntries(
          Object.entries(s.responses).map(([status, r]) => [
            status,
            { description: r.description, ...(r.schema ? { content: { 'application/json': { schema: jsonSchema(r.schema, 'output') } } } : {}) },
          ]),
        ),
      };
    }
    return {
      openapi: '3.1.0',
      info,
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
        schemas: { Error: jsonSchema(errorSchema, 'output') },
      },
      security: [{ bearer: [] }],
      paths,
    };
  }
}

export const errorSchema = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() }),
});

function validate<S extends z.ZodType>(where: string, schema: S, value: unknown): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw zodRefusal(where, result.error);
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output' = 'input'): unknown {
  return z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' });
}

function objectFields(schema: z.ZodType | undefined): Array<[string, unknown, boolean]> {
  if (!schema || !(schema instanceof z.ZodObject)) return [];
  return Object.entries(schema.shape as Record<string, z.ZodType>).map(([name, s]) => [name, jsonSchema(s), !s.safeParse(undefined).success]);
}
