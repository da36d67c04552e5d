import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { z } from 'zod';

// The one YAML file. Order of work: parse the file → apply --set overrides → substitute
// ${ENV} in every string → validate with zod (unknown keys are errors). Any failure is a
// ConfigError carrying the dotted path of the bad key; the CLI prints it and exits 2.

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected "host:port", for example "127.0.0.1:7070"')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'port must be 0..65535');

const tier = z.strictObject({
  daily_token_limit: z.int().positive().describe('tokens a user of this tier may use per UTC day'),
  monthly_token_limit: z.int().positive().optional().describe('tokens per UTC calendar month, checked with the daily limit'),
  conversation_retention_days: z.int().positive().describe('days a conversation is kept after its last message'),
  conversation_hot_days: z.number().positive().default(3).describe('days without a message before a conversation moves to the archive tier'),
  usage_retention_days: z.int().positive().optional().describe('days usage records are kept (default: retention.usage_days)'),
});

const hostPort = z.strictObject({ host: z.string().min(1), port: z.int().min(1).max(65535) });

const redis = z
  .strictObject({
    mode: z.enum(['standalone', 'sentinel', 'cluster']).default('standalone'),
    /** standalone: redis://[user:pass@]host:port[/db] (rediss:// for TLS). */
    url: z.string().min(1).default('redis://127.0.0.1:6379'),
    /** sentinel: the sentinels and the monitored master's name. */
    sentinels: z.array(hostPort).optional(),
    master_name: z.string().min(1).optional(),
    /** cluster: seed nodes. */
    nodes: z.array(hostPort).optional(),
    /** Empty means none, so `${REDIS_PASSWORD:-}` works when no password is set. */
    username: z.string().optional(),
    password: z.string().optional(),
    tls: z.boolean().default(false),
    key_prefix: z.string().default('strata:'),
    /** Commands slower than this count as failures and fall back to SQLite. */
    command_timeout_ms: z.int().positive().default(250),
  })
  .superRefine((r, ctx) => {
    if (r.mode === 'sentinel' && (!r.sentinels?.length || !r.master_name)) {
      ctx.addIssue({ code: 'custom', message: 'mode sentinel needs sentinels and master_name' });
    }
    if (r.mode === 'cluster' && !r.nodes?.length) ctx.addIssue({ code: 'custom', message: 'mode cluster needs nodes' });
  });

const price = z.strictObject({
  input_micros_per_million_tokens: z.int().min(0),
  output_micros_per_million_tokens: z.int().min(0),
});

const fsTier = z.strictObject({
  driver: z.literal('fs'),
  /** Default: <data_dir>/objects/<tier>. */
  path: z.string().min(1).optional(),
});

const s3Tier = z.strictObject({
  driver: z.literal('s3'),
  endpoint: z.string().min(1).describe('host name of the MinIO / S3 endpoint'),
  port: z.int().min(1).max(65535).optional(),
  use_ssl: z.boolean().default(true),
  region: z.string().default('us-east-1'),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'a valid S3 bucket name (3-63 characters)'),
  access_key: z.string().min(1),
  secret_key: z.string().min(1),
  path_style: z.boolean().default(true),
  part_size_bytes: z.int().min(5 * 1024 * 1024).default(16 * 1024 * 1024),
  parallel_parts: z.int().min(1).max(64).default(4),
});

export const objectTierSchema = z.discriminatedUnion('driver', [fsTier, s3Tier]);
export type ObjectTierConfig = z.infer<typeof objectTierSchema>;

export const configSchema = z.strictObject({
  node: z
    .strictObject({
      id: z.string().min(1).default(hostname()),
    })
    .prefault({}),
  server: z
    .strictObject({
      listen: listen.default('127.0.0.1:7070'),
      max_body_bytes: z.int().positive().default(16 * 1024 * 1024),
      shutdown_timeout_seconds: z.number().positive().default(15),
      tls: z
        .strictObject({
          cert_file: z.string().min(1),
          key_file: z.string().min(1),
        })
        .optional(),
    })
    .prefault({}),
  storage: z
    .strictObject({
      data_dir: z.string().min(1).default('./data'),
    })
    .prefault({}),
  objects: z
    .strictObject({
      hot: objectTierSchema.default({ driver: 'fs' }),
      archive: objectTierSchema.default({ driver: 'fs' }),
      /** Unreferenced blobs younger than this are kept: uploads in flight write bytes before rows. */
      gc_grace_seconds: z.int().min(0).default(86_400),
      /** Resumable upload sessions not completed within this are ended by GC and their parts deleted. */
      upload_session_ttl_seconds: z.int().positive().default(7 * 86_400),
      gc_interval_seconds: z.int().min(0).default(3600),
    })
    .prefault({}),
  models: z
    .strictObject({
      cache: z
        .strictObject({
          /** Default: <data_dir>/cache/models. Put it on the fastest local disk. */
          path: z.string().min(1).optional(),
          capacity_bytes: z.int().positive().default(10 * 1024 ** 3),
          pinned_aliases: z.array(z.string().min(1)).default(['production']),
          /** A cache miss on an S3 hot tier reads the object with this many ranged GETs at once (1: one GET). */
          fill_parallel_gets: z.int().min(1).max(64).default(4),
          /** Bytes per ranged GET of a fill; memory per fill is at most parallel GETs × this. */
          fill_part_bytes: z.int().min(1024 * 1024).max(1024 * 1024 * 1024).default(8 * 1024 * 1024),
        })
        .prefault({}),
    })
    .prefault({}),
  checkpoints: z
    .strictObject({
      keep_last: z.int().min(1).default(3),
      archive_older: z.boolean().default(true),
      delete_after_days: z.int().min(1).default(30),
    })
    .prefault({}),
  cache: z
    .strictObject({
      driver: z.enum(['memory', 'redis']).default('memory'),
      memory: z.strictObject({ max_bytes: z.int().positive().default(256 * 1024 * 1024) }).prefault({}),
      redis: redis.optional(),
    })
    .refine((c) => c.driver !== 'redis' || c.redis !== undefined, 'driver redis needs a redis: section')
    .prefault({}),
  conversations: z
    .strictObject({
      /** Recent messages per conversation kept in the cache, with a sliding expiry. */
      cached_messages: z.int().min(0).max(10_000).default(100),
      hot_ttl_seconds: z.int().positive().default(86_400),
      archive: z
        .strictObject({
          /** How often the archive/retention job runs; 0 turns it off. */
          interval_seconds: z.int().min(0).default(3600),
          /** Archive segments of conversations deleted by retention are kept this long, then deleted. 0: not kept. */
          compliance_retention_days: z.int().min(0).default(365),
          /** Conversations handled per job step (one transaction each). */
          batch: z.int().positive().default(100),
        })
        .prefault({}),
    })
    .prefault({}),
  usage: z
    .strictObject({
      /** Per-model prices in millionths of the currency unit per million tokens; "*" applies to models not listed. */
      prices: z.record(z.string().min(1), price).default({}),
    })
    .prefault({}),
  encryption: z
    .strictObject({
      enabled: z.boolean().default(false),
      /** A file holding 32 random bytes in base64 (`openssl rand -base64 32`), outside the data dir. */
      master_key_file: z.string().min(1).optional(),
      /** The same, inline: use ${ENV} (e.g. from a systemd credential), never a literal. */
      master_key: z.string().min(1).optional(),
    })
    .refine((e) => !e.enabled || e.master_key_file !== undefined || e.master_key !== undefined, 'encryption.enabled needs master_key_file or master_key')
    .prefault({}),
  security: z
    .strictObject({
      /** Per token: a bucket of `burst` requests refilled at `requests_per_second`; 0 turns it off. */
      rate_limit: z
        .strictObject({
          requests_per_second: z.number().min(0).default(0),
          burst: z.int().positive().default(400),
        })
        .prefault({}),
      /** JSON bodies nested deeper than this are refused before parsing. */
      max_json_depth: z.int().positive().max(1000).default(64),
    })
    .prefault({}),
  retention: z
    .strictObject({
      /** How often the retention job runs; 0 = only on demand. */
      interval_seconds: z.int().min(0).default(3600),
      /** Usage records older than this go (per tier: tiers.<t>.usage_retention_days). */
      usage_days: z.int().positive().default(90),
      /** Model versions older than this go unless an alias points at them. */
      model_versions_days: z.int().positive().default(730),
    })
    .prefault({}),
  billing: z
    .strictObject({
      /** The ledger's own SQLite file. Default: <data_dir>/billing.db. */
      path: z.string().min(1).optional(),
    })
    .prefault({}),
  vectors: z
    .strictObject({
      /** Where usearch index files are saved. Default: <data_dir>/indexes. Derived state: deletable. */
      index_dir: z.string().min(1).optional(),
      max_batch: z.int().positive().max(100_000).default(1000),
      max_dimensions: z.int().positive().max(65_536).default(4096),
      /** Filtered queries matching at most this many vectors are answered by exact search. */
      exact_search_max: z.int().min(0).default(1024),
      compact_tombstone_ratio: z.number().gt(0).lt(1).default(0.25),
      save_interval_seconds: z.int().min(0).default(60),
      defaults: z
        .strictObject({
          connectivity: z.int().min(2).max(256).default(16),
          expansion_add: z.int().min(1).max(4096).default(128),
          expansion_search: z.int().min(1).max(4096).default(64),
        })
        .prefault({}),
    })
    .prefault({}),
  datasets: z
    .strictObject({
      /** Worker threads of the pipeline jobs (parse, normalize, fingerprint, filter, redact, tokenize, encode shards). Default: the cores this process may use. */
      workers: z.int().min(1).max(256).optional(),
      /** Duplicate-detection tables a job keeps in memory before spilling to a scratch file, in MiB. */
      dedup_memory_mb: z.int().min(1).max(2048).default(32),
    })
    .prefault({}),
  embeddings: z
    .strictObject({
      cache: z
        .strictObject({
          dtype: z.enum(['f32', 'f16']).default('f16'),
          /** Byte budget with the memory cache driver (the Redis driver relies on TTL and Redis's own maxmemory). */
          max_bytes: z.int().positive().default(256 * 1024 * 1024),
          ttl_seconds: z.int().positive().default(30 * 86_400),
        })
        .prefault({}),
    })
    .prefault({}),
  backup: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** An object store: a directory (default <data_dir>/backups) or MinIO/S3, ideally in another region. */
      target: objectTierSchema.default({ driver: 'fs' }),
      snapshot_interval_seconds: z.int().positive().default(86_400),
      /** How often change-log segments are shipped: the recovery point objective. */
      segment_seconds: z.number().positive().default(1),
      retention_days: z.int().positive().default(30),
    })
    .prefault({}),
  replication: z
    .strictObject({
      role: z.enum(['primary', 'replica']).default('primary'),
      /** replica: the primary's base URL, e.g. https://strata-1:7070. */
      primary_url: z.string().url().optional(),
      /** replica: a service or admin token of the primary (tokens replicate, so it works here too). */
      token: z.string().min(1).optional(),
      /** Stores whose writes answer only once a replica has applied them: billing, main. */
      synchronous: z.array(z.enum(['billing', 'main'])).default(['billing']),
      /** Synchronous stores wait only when at least this many replicas are expected; 0 = standalone. */
      sync_min_replicas: z.int().min(0).max(1).default(0),
      sync_timeout_ms: z.int().positive().default(5000),
      /** A replica further behind than this answers 503 on /readyz. */
      max_lag_seconds: z.number().positive().default(30),
      /** Change-log records older than this are pruned; a replica further behind bootstraps again. */
      log_retention_seconds: z.int().positive().default(7 * 86_400),
      /** The URL other nodes reach this one at (fence notices, the lease); default: the listen address. */
      advertise_url: z.string().url().optional(),
      /**
       * A node that starts as primary (without a lease) refuses writes until a replica it last
       * served confirms no newer epoch exists. false: write at once — only for a deliberate
       * single-node start, e.g. after the replicas were retired for good.
       */
      confirm_epoch: z.boolean().default(true),
      /**
       * A replica answers a write it cannot take with 307 to the primary (same path and query;
       * the client sends the same method and body there) instead of 409 read_only_replica.
       */
      redirect_writes: z.boolean().default(false),
      /**
       * manual: a replica becomes primary only by `strata promote`. auto: a replica within
       * max_lag_seconds promotes itself when the primary's lease lapses (needs lease.enabled).
       */
      failover: z.enum(['manual', 'auto']).default('manual'),
      /**
       * Turn on when nodes share the object tier (one MinIO bucket, one NFS path): the primary
       * writes only while it holds a lease object there, renewed every ttl/3, and a promoted
       * replica starts writing one ttl after taking it over. The store must honour
       * conditional writes (MinIO, S3, fs); the daemon checks that at start.
       */
      lease: z
        .strictObject({
          enabled: z.boolean().default(false),
          ttl_ms: z.int().min(500).max(300_000).default(10_000),
          /** Where the lease lives: the hot object tier (shared by the nodes), or etcd v3. */
          store: z.enum(['tier', 'etcd']).default('tier'),
          /** store: etcd — client URLs of the etcd members, e.g. http://etcd-1:2379. */
          etcd_endpoints: z.array(z.string().url()).max(16).default([]),
        })
        .prefault({}),
    })
    .refine((r) => r.role !== 'replica' || (r.primary_url !== undefined && r.token !== undefined), 'a replica needs primary_url and token')
    .prefault({}),
  qdrant: z
    .strictObject({
      /**
       * host:port of the Qdrant-compatible REST API (6333 by convention), e.g. 127.0.0.1:6333.
       * Off when absent: another way in, opened only on purpose. Same TLS as server.tls.
       */
      listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'host:port').optional(),
    })
    .prefault({}),
  s3: z
    .strictObject({
      /**
       * host:port of the S3-compatible endpoint (a listener of its own, like MinIO's), e.g.
       * 127.0.0.1:9000. Off when absent: it is another way in, opened only on purpose.
       */
      listen: z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'host:port').optional(),
      /** Virtual-host style requests: <bucket>.<domain> (path style always works). */
      domain: z.string().min(1).optional(),
      /** The region GetBucketLocation reports; clients may sign for any region. */
      region: z.string().min(1).default('us-east-1'),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true),
    })
    .prefault({}),
  tiers: z
    .record(z.string().regex(/^[a-z][a-z0-9_-]*$/, 'tier names are lower-case words'), tier)
    .refine((t) => Object.keys(t).length > 0, 'at least one tier is needed')
    .prefault({
      free: { daily_token_limit: 1_000_000, conversation_retention_days: 7 },
      plus: { daily_token_limit: 5_000_000, conversation_retention_days: 30 },
      pro: { daily_token_limit: 20_000_000, conversation_retention_days: 30 },
      enterprise: { daily_token_limit: 100_000_000, conversation_retention_days: 30 },
    }),
});

export type StrataConfig = z.infer<typeof configSchema>;

/** The embedded default file, used when no --config is given (found from src/ and dist/ alike). */
export function defaultConfigFile(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'config', 'strata.yaml');
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new ConfigError(['the embedded config/strata.yaml was not found; pass --config FILE']);
    dir = parent;
  }
}

export interface LoadOptions {
  /** `key.path=value` strings from --set. */
  overrides?: string[];
  env?: Record<string, string | undefined>;
}

export function loadConfig(file: string, options: LoadOptions = {}): StrataConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`${file}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  return parseConfig(text, { ...options, source: file });
}

export function parseConfig(text: string, options: LoadOptions & { source?: string } = {}): StrataConfig {
  const source = options.source ?? 'config';
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${source}: invalid YAML: ${e.message.split('\n')[0]}`));
  }
  let raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError([`${source}: expected a mapping at the top level`]);
  }
  for (const o of options.overrides ?? []) raw = applyOverride(raw as Record<string, unknown>, o);
  raw = substituteEnv(raw, options.env ?? process.env, []);
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(result.error.issues.map(describeIssue));
  return result.data;
}

/** `a.b.c=value`: the value is parsed as YAML, so numbers and booleans keep their type. */
export function applyOverride(root: Record<string, unknown>, override: string): Record<string, unknown> {
  const eq = override.indexOf('=');
  if (eq <= 0) throw new ConfigError([`--set ${override}: expected key.path=value`]);
  const path = override.slice(0, eq).split('.');
  if (path.some((p) => p === '')) throw new ConfigError([`--set ${override}: the key path has an empty segment`]);
  const valueText = override.slice(eq + 1);
  let value: unknown;
  try {
    value = valueText === '' ? '' : YAML.parse(valueText);
  } catch {
    value = valueText;
  }
  let node: Record<string, unknown> = root;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
  return root;
}

// ${NAME} and ${NAME:-fallback} in any string; $${ is a literal "${".
function substituteEnv(value: unknown, env: Record<string, string | undefined>, path: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (match, name: string, fallback?: string) => {
      if (match.startsWith('$$')) return match.slice(1);
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      throw new ConfigError([`${path.join('.')}: environment variable ${name} is not set`]);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, [...path, String(i)]));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteEnv(v, env, [...path, k])]));
  }
  return value;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => `${path ? `${path}.` : ''}${k}: unknown key`).join('\n');
  }
  return `${path || '(top level)'}: ${issue.message}`;
}
