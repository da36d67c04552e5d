import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { AuditLog, auditMigrations } from '../engines/audit/audit-log.js';
import { TokenStore, tokenMigrations } from '../engines/auth/token-store.js';
import { SqlStore } from '../engines/sql/sql-store.js';
import type { Actor } from '../engines/sql/writer.js';
import { UserStore, userMigrations } from '../engines/users/user-store.js';
import { ModelRegistry, modelMigrations } from '../engines/models/model-registry.js';
import type { ObjectStore } from '../engines/objects/object-store.js';
import { openObjectTier } from './object-tiers.js';
import { ModelCache } from '../engines/models/model-cache.js';
import { CheckpointStore } from '../engines/models/checkpoint-store.js';
import { ConfigError, type StrataConfig } from './config.js';
import type { Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { CacheTier } from '../engines/cache/cache-tier.js';
import { MemoryCache } from '../engines/cache/memory-cache.js';
import { ConversationStore, conversationMigrations } from '../engines/conversations/conversation-store.js';
import { ConversationArchive } from '../engines/conversations/conversation-archive.js';
import { UsageMeter, usageMigrations } from '../engines/usage/usage-meter.js';
import { BillingLedger, billingMigrations } from '../engines/billing/billing-ledger.js';
import { Conflict, InvalidInput, NotFound } from '../engines/errors.js';
import { VERSION } from './version.js';
import { RequestLog } from './request-log.js';
import { openCache } from './cache-driver.js';
import { VectorStore, vectorMigrations } from '../engines/vectors/vector-store.js';
import { EmbeddingCache } from '../engines/vectors/embedding-cache.js';
import { KnowledgeGraph, graphMigrations } from '../engines/graph/knowledge-graph.js';
import type { Cache } from '../engines/cache/cache.js';
import { Lease } from '../replication/lease.js';
import { EtcdLeaseStore } from '../replication/etcd-lease-store.js';
import { RetentionJob, type RetentionReport } from '../engines/retention/retention-job.js';
import { JobStore, jobMigrations, type Job } from '../engines/jobs/job-store.js';
import { JobRunner } from '../engines/jobs/job-runner.js';
import { DatasetCatalog, datasetMigrations } from '../engines/datasets/dataset-catalog.js';
import { DatasetPipeline, type PipelineParams } from '../engines/datasets/dataset-pipeline.js';
import { PipelinePool } from '../engines/datasets/pipeline-pool.js';
import { FeedbackStore, feedbackMigrations } from '../engines/feedback/feedback-store.js';
import { cryptoMigrations, Keyring } from '../engines/crypto/keyring.js';
import { FieldCipher } from '../engines/crypto/field-cipher.js';
import { loadMasterKey, MasterKeyError, type MasterKey } from '../engines/crypto/master-key.js';
import { Sealer } from '../engines/crypto/sealed-stream.js';
import { PiiScanner } from '../engines/privacy/pii-scanner.js';
import { TextWorker } from '../engines/text-worker.js';
import { SealedObjectStore } from '../engines/objects/sealed-object-store.js';
import { deletingOnlyWhenOwned, TierOwner } from '../engines/objects/tier-owner.js';
import { Replication } from '../replication/replication.js';
import { Backups } from '../replication/backups.js';
import { BackupArchive } from '../replication/backup-archive.js';
import { RESTORE_MARKER } from '../replication/restore.js';
import { AuthFailures } from './auth-failures.js';
import { BackgroundJobs } from './background-jobs.js';
import { eraseUser } from './user-erasure.js';
import { exportUser } from './user-export.js';

export const SYSTEM: Actor = { tokenId: 'system' };

export const ENGINE_MIGRATIONS = [...auditMigrations, ...cryptoMigrations, ...jobMigrations, ...datasetMigrations, ...feedbackMigrations, ...tokenMigrations, ...userMigrations, ...modelMigrations, ...conversationMigrations, ...usageMigrations, ...vectorMigrations, ...graphMigrations];
export const BILLING_MIGRATIONS = billingMigrations;

/** What createEngines needs besides the SQL store; everything but `hot` has a local default. */
export interface EngineDeps {
  hot: ObjectStore;
  archive?: ObjectStore | undefined;
  modelCache?: ModelCache | undefined;
  cache?: CacheTier | undefined;
  metrics?: Metrics | undefined;
  /** Where vector index files live (derived state; relative to the working directory if relative). */
  indexDir?: string | undefined;
  log?: Logger | undefined;
  /** Set when encryption is on: it opens the keyring (KEK) kept in the store. */
  masterKey?: MasterKey | undefined;
}


/**
 * The engines on one SQL store. Separate from StrataNode.open so that a replica or a restore
 * can define the same change types on a store and replay a log into it.
 */
export function createEngines(sql: SqlStore, config: Pick<StrataConfig, 'tiers' | 'models' | 'conversations' | 'usage' | 'cache' | 'vectors' | 'datasets'>, deps: EngineDeps) {
  const { hot, archive, modelCache, metrics } = deps;
  const cache = deps.cache ?? new CacheTier(new MemoryCache(config.cache.memory.max_bytes), 'local');
  const audit = new AuditLog(sql.db, sql.changes);
  sql.writer.setAuditor(audit.append);
  const keyring = new Keyring(sql.db, sql.changes, deps.masterKey);
  const cipher = new FieldCipher(keyring);
  const tokens = new TokenStore(sql.db, sql.changes, sql.writer, keyring);
  const users = new UserStore(sql.db, sql.changes, sql.writer, () => Object.keys(config.tiers), cache, cipher);
  // A referenced object the tier no longer holds is data loss: counted, and logged by key.
  const objectMissing = (tier: string, key: string) => {
    metrics?.objectsMissing.labels(tier).inc();
    deps.log?.error({ tier, key }, 'a referenced object is missing from the object tier: data loss; restore it from a backup or a replica');
  };
  const models = new ModelRegistry(sql.db, sql.changes, sql.writer, hot, modelCache, config.models.cache.pinned_aliases, archive, { objectMissing });
  const checkpoints = new CheckpointStore(sql.db, sql.changes, sql.writer, models);
  // One text worker per kind of caller, each with its own queue: a flood of scans delays
  // scans, not the tagging of every append, and a dataset job delays neither.
  // Records keyed by a user check the user inside their own write: checked before it, an
  // erasure committing in between left a conversation no erasure could reach (review).
  const requireUser = (userId: string) => void users.get(userId);
  const tagging = new TextWorker('conversation tagging', 128 * 1024 * 1024);
  const scanning = new TextWorker('PII scan', 64 * 1024 * 1024);
  const pipelinePool = new PipelinePool(config.datasets.workers);
  const pii = new PiiScanner(scanning);
  const conversations = new ConversationStore(sql.db, sql.changes, sql.writer, cache, {
    cachedMessages: config.conversations.cached_messages,
    ttlSeconds: config.conversations.hot_ttl_seconds,
  }, cipher, new PiiScanner(tagging), requireUser);
  const conversationArchive = new ConversationArchive(
    sql.db,
    sql.changes,
    sql.writer,
    archive ?? hot,
    conversations,
    (tier) => {
      const t = config.tiers[tier];
      return t && { hotDays: t.conversation_hot_days, retentionDays: t.conversation_retention_days };
    },
    {
      complianceRetentionDays: config.conversations.archive.compliance_retention_days,
      batch: config.conversations.archive.batch,
      shortest: {
        hotDays: Math.min(...Object.values(config.tiers).map((t) => t.conversation_hot_days)),
        retentionDays: Math.min(...Object.values(config.tiers).map((t) => t.conversation_retention_days)),
      },
    },
    {
      missing: (key) => objectMissing(archive ? 'archive' : 'hot', key),
      archived: (n, raw, stored) => {
        metrics?.conversationsArchived.inc(n);
        metrics?.conversationArchiveBytes.labels('raw').inc(raw);
        metrics?.conversationArchiveBytes.labels('stored').inc(stored);
      },
      deleted: (n) => metrics?.conversationsDeleted.inc(n),
      progress: (step, done) => metrics?.archiveJobProcessed.labels(step).set(done),
    },
  );
  const prices = config.usage.prices;
  const usage = new UsageMeter(
    sql.db,
    sql.changes,
    sql.writer,
    cache,
    (userId) => {
      const tier = config.tiers[users.tierOf(userId)];
      if (!tier) throw new NotFound(`the tier of user ${userId} is no longer configured`);
      return { daily: tier.daily_token_limit, monthly: tier.monthly_token_limit };
    },
    (model) => prices[model] ?? prices['*'],
    { refused: () => metrics?.quotaRefusals.inc() },
  );
  const vectors = new VectorStore(
    sql.db,
    sql.changes,
    sql.writer,
    {
      indexDir: deps.indexDir ?? 'indexes',
      maxBatch: config.vectors.max_batch,
      exactSearchMax: config.vectors.exact_search_max,
      compactRatio: config.vectors.compact_tombstone_ratio,
    },
    {
      queryDuration: (seconds, plan) => metrics?.vectorQueryDuration.labels(plan).observe(seconds),
      log: (msg, fields) => deps.log?.warn(fields ?? {}, msg),
    },
  );
  const graph = new KnowledgeGraph(sql.db, sql.changes, sql.writer);
  const jobs = new JobStore(sql.db, sql.changes, sql.writer);
  const datasets = new DatasetCatalog(sql.db, sql.changes, sql.writer, hot);
  const feedback = new FeedbackStore(sql.db, sql.changes, sql.writer, cipher, requireUser);
  return { jobs, datasets, feedback, audit, keyring, cipher, tokens, users, models, checkpoints, conversations, conversationArchive, usage, cache, vectors, graph, pii, pipelinePool, workers: [tagging, scanning, pipelinePool], objectMissing };
}

/**
 * Everything one Strata node holds open: the SQLite store, the engines on it and the metrics.
 * It knows nothing of HTTP; the CLI opens one to serve it (server.ts) or to act offline
 * (`strata token create`).
 */
export class StrataNode {
  readonly dataDir: string;
  /** Set while the node drains for shutdown: /readyz answers 503 and responses close their connection. */
  draining = false;
  /** The runtime's HTTP server the daemon listens with (set by server.ts; absent in process). */
  httpServer: string | undefined;
  /** The access log line of every request (see request-log.ts). */
  readonly requestLog: RequestLog;

  private constructor(
    readonly config: StrataConfig,
    readonly log: Logger,
    readonly metrics: Metrics,
    readonly sql: SqlStore,
    readonly tokens: TokenStore,
    readonly audit: AuditLog,
    readonly users: UserStore,
    readonly models: ModelRegistry,
    readonly modelCache: ModelCache,
    readonly checkpoints: CheckpointStore,
    readonly cache: CacheTier,
    readonly conversations: ConversationStore,
    readonly conversationArchive: ConversationArchive,
    readonly usage: UsageMeter,
    readonly billingSql: SqlStore,
    readonly billing: BillingLedger,
    readonly vectors: VectorStore,
    readonly graph: KnowledgeGraph,
    readonly embeddings: EmbeddingCache,
    readonly replication: Replication,
  ) {
    this.dataDir = resolve(config.storage.data_dir);
    this.requestLog = new RequestLog(log);
  }

  static async open(config: StrataConfig, log: Logger): Promise<StrataNode> {
    const dataDir = resolve(config.storage.data_dir);
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    if (existsSync(join(dataDir, RESTORE_MARKER))) {
      throw new ConfigError([`storage.data_dir: ${dataDir} holds an unfinished restore (${RESTORE_MARKER}); its databases stop at an arbitrary point. Restore again into an empty directory`]);
    }
    const metrics = new Metrics(config.node.id);
    const masterKey = StrataNode.masterKey(config);
    // Objects and cache files are sealed with keys the keyring wraps; it exists once the engines do.
    let keyring: Keyring | undefined;
    const sealer = masterKey ? new Sealer({ wrap: (k, c) => keyring!.wrap(k, c), unwrap: (w, c) => keyring!.unwrap(w, c) }) : undefined;
    const sealed = (store: ObjectStore) => (sealer ? new SealedObjectStore(store, sealer) : store);
    const sql = await SqlStore.open(join(dataDir, 'strata.db'), ENGINE_MIGRATIONS, {
      onCommit: ({ seconds, calls, lastLsn }) => {
        metrics.sqlTransactionDuration.observe(seconds);
        metrics.sqlBatchCalls.observe(calls);
        metrics.changelogLsn.set(lastLsn);
      },
    });
    // The lineage this data dir belongs to (see tier-owner.ts); replicas take their primary's.
    if (!sql.meta('cluster_id')) sql.db.prepare("INSERT INTO meta (key, value) VALUES ('cluster_id', ?)").run(randomUUID());
    const owners: Record<'hot' | 'archive', TierOwner> = {} as Record<'hot' | 'archive', TierOwner>;
    const ownedOnly = (tier: 'hot' | 'archive', store: ObjectStore) => {
      owners[tier] = new TierOwner(tier, store, { clusterId: () => sql.meta('cluster_id')!, nodeId: config.node.id });
      return deletingOnlyWhenOwned(store, owners[tier], (key) => {
        metrics.objectDeletesSkipped.labels(tier).inc();
        log.warn({ tier, key, owner: owners[tier].owner()?.cluster_id }, 'not deleting from an object tier this node does not own');
      });
    };
    // The registry answers which blobs are pinned; the cache asks lazily, at eviction time.
    let pinned: () => ReadonlySet<string> = () => new Set();
    let hot: ObjectStore;
    let archive: ObjectStore;
    let cache: ModelCache;
    let cacheTier: CacheTier;
    let backend: Cache;
    let billingSql: SqlStore;
    let lease: Lease | undefined;
    try {
      if (config.replication.failover === 'auto' && !config.replication.lease.enabled) {
        throw new ConfigError(['replication.failover: auto needs a store every node can reach that offers compare-and-swap: turn replication.lease.enabled on (a shared object tier, or store: etcd)']);
      }
      const leaseCfg = config.replication.lease;
      if (leaseCfg.enabled && leaseCfg.store === 'etcd' && leaseCfg.etcd_endpoints.length === 0) {
        throw new ConfigError(['replication.lease.etcd_endpoints: store etcd needs at least one endpoint (http://host:2379)']);
      }
      const rawHot = await openObjectTier('hot', config.objects.hot, dataDir, metrics);
      hot = sealed(ownedOnly('hot', rawHot));
      if (config.replication.lease.enabled) {
        // The lease holds no user data and must work before the keyring is open: unsealed.
        lease = new Lease(
          leaseCfg.store === 'etcd' ? new EtcdLeaseStore(leaseCfg.etcd_endpoints) : rawHot,
          {
            nodeId: config.node.id,
            ttlMs: config.replication.lease.ttl_ms,
            // Every replica this primary has served: each may confirm its synchronous writes.
            standbys: () => node.replication.knownReplicas().map(({ node_id, url }) => ({ node_id, url })),
          },
          {
            lost: (holder) => node.replication.leaseLost(holder),
            wrote: () => node.replication.tracker.recheck(),
            log: (level, msg, fields) => log[level](fields ?? {}, msg),
          },
        );
        await lease.checkStore().catch((err: unknown) => {
          throw new ConfigError([`replication.lease: ${(err as Error).message}`]);
        });
      }
      archive = sealed(ownedOnly('archive', await openObjectTier('archive', config.objects.archive, dataDir, metrics)));
      const cacheCfg = config.models.cache;
      cache = await ModelCache.open(cacheCfg.path ?? join(dataDir, 'cache', 'models'), cacheCfg.capacity_bytes, () => pinned(), {
        hit: () => metrics.modelCacheHits.inc(),
        miss: () => metrics.modelCacheMisses.inc(),
        evict: (bytes) => {
          metrics.modelCacheEvictions.inc();
          metrics.modelCacheBytes.dec(bytes);
        },
        fill: (bytes) => metrics.modelCacheBytes.inc(bytes),
        fillFailed: (sha256, err) => log.warn({ sha256, err: err.message }, 'model cache fill failed; reads of this file are served from the object tier'),
      }, sealer);
      // A local disk gains nothing from parallel reads of one file; a remote tier does.
      if (config.objects.hot.driver === 's3' && cacheCfg.fill_parallel_gets > 1) cache.ranged = { width: cacheCfg.fill_parallel_gets, partBytes: cacheCfg.fill_part_bytes };
      backend = await openCache(config.cache, log);
      const showState = (s: 'ok' | 'degraded') => {
        metrics.cacheDegraded.set(s === 'ok' ? 0 : 1);
        metrics.redisConnected.set(backend.driver === 'redis' && s === 'ok' ? 1 : 0);
      };
      showState(backend.state());
      cacheTier = new CacheTier(backend, config.node.id, {
        hit: (use) => metrics.cacheRequests.labels(use, 'hit').inc(),
        miss: (use) => metrics.cacheRequests.labels(use, 'miss').inc(),
        state: showState,
      });
      billingSql = await SqlStore.open(resolve(config.billing.path ?? join(dataDir, 'billing.db')), BILLING_MIGRATIONS);
    } catch (err) {
      await sql.close();
      throw err;
    }
    metrics.modelCacheBytes.set(cache.stats().used_bytes);
    const engines = createEngines(sql, config, {
      hot,
      archive,
      modelCache: cache,
      cache: cacheTier,
      metrics,
      indexDir: resolve(config.vectors.index_dir ?? join(dataDir, 'indexes')),
      log,
      masterKey,
    });
    keyring = engines.keyring;
    try {
      await engines.keyring.open(config.replication.role === 'primary' ? sql.writer : undefined).catch((err: unknown) => {
        throw err instanceof MasterKeyError ? new ConfigError([`encryption: ${err.message}`]) : err;
      });
      await engines.vectors.open();
    } catch (err) {
      await engines.vectors.close().catch(() => undefined);
      await sql.close();
      throw err;
    }
    metrics.vectorCollections = () => engines.vectors.list();
    // Embeddings get their own byte budget in memory; with Redis they share it, under TTL.
    const embeddingBackend = backend.driver === 'memory' ? new MemoryCache(config.embeddings.cache.max_bytes) : backend;
    const embeddings = new EmbeddingCache(
      embeddingBackend,
      { dtype: config.embeddings.cache.dtype, ttlSeconds: config.embeddings.cache.ttl_seconds },
      { hit: (n) => metrics.embeddingCacheHits.inc(n), miss: (n) => metrics.embeddingCacheMisses.inc(n) },
    );
    const { audit, tokens, users, models, checkpoints } = engines;
    const billing = new BillingLedger(billingSql, {}, {
      seal: (userId, text) => engines.cipher.sealWithExistingKey(userId, text),
      open: (userId, stored) => engines.cipher.open(userId, stored),
    });
    metrics.ledgerEntries = () => billing.count();
    pinned = () => models.pinnedBlobs();
    await cache.trim();
    metrics.objectBytesByTier = () => models.bytesByTier();
    metrics.changelogLsn.set(sql.writer.lastLsn);
    const node = new StrataNode(
      config,
      log,
      metrics,
      sql,
      tokens,
      audit,
      users,
      models,
      cache,
      checkpoints,
      cacheTier,
      engines.conversations,
      engines.conversationArchive,
      engines.usage,
      billingSql,
      billing,
      engines.vectors,
      engines.graph,
      embeddings,
      StrataNode.replicationFor(config, log, metrics, sql, billingSql, engines.vectors, cacheTier, { hot, archive }, lease, engines.keyring, engines.tokens, engines.users),
    );
    node.objectTiers = { hot, archive };
    node.tierOwners = owners;
    node.keyring = engines.keyring;
    node.jobs = engines.jobs;
    node.pii = engines.pii;
    node.textWorkers = engines.workers;
    node.objectMissing = engines.objectMissing;
    metrics.jobsByState = () => sql.db.prepare<{ state: string; count: number }>('SELECT status AS state, COUNT(*) AS count FROM jobs GROUP BY status').all();
    metrics.disk = () => {
      try {
        const s = statfsSync(dataDir);
        return { free: Number(s.bavail) * Number(s.bsize), total: Number(s.blocks) * Number(s.bsize) };
      } catch {
        return undefined;
      }
    };
    node.jobRunner = new JobRunner(engines.jobs, SYSTEM, (level, msg, fields) => log[level](fields, msg));
    node.jobRunner.register('erase_user', 'privacy', (job, ctx) => eraseUser(node, job.id, String(job.params.user_id), ctx));
    node.datasets = engines.datasets;
    node.feedback = engines.feedback;
    const scratch = join(dataDir, '.tmp');
    mkdirSync(scratch, { recursive: true });
    const pipeline = new DatasetPipeline(engines.datasets, scratch, VERSION, engines.pipelinePool, { dedupMemoryBytes: config.datasets.dedup_memory_mb * 1024 * 1024, objectMissing: engines.objectMissing });
    node.jobRunner.register('dataset_pipeline', 'datasets', async (job, ctx) => {
      const { dataset, ...params } = job.params as unknown as { dataset: string } & PipelineParams;
      const r = await pipeline.run(SYSTEM, job.id, dataset, params, ctx);
      return { dataset: r.dataset, version: r.version, stats: r.stats };
    });
    node.retention = new RetentionJob(sql.writer, engines.usage, engines.models, engines.conversationArchive, {
      tiers: Object.fromEntries(
        Object.entries(config.tiers).map(([name, t]) => [name, { usageDays: t.usage_retention_days ?? config.retention.usage_days, conversationDays: t.conversation_retention_days }]),
      ),
      modelVersionsDays: config.retention.model_versions_days,
    });
    if (config.backup.enabled) node.backups = await node.openBackups();
    await node.checkTierOwnership();
    // A replica's tokens (the admin's included) come from its primary.
    if (node.replication.role === 'primary') await node.ensureAdminToken();
    return node;
  }

  /**
   * Removes the scratch files of jobs and snapshots a crash interrupted (a dedup database, a
   * half-copied snapshot: hundreds of MB that nothing would ever delete). Only the process that
   * holds the data dir's lock, before it opens the node: offline commands that run beside a
   * daemon (`token create`, `retention --dry-run`) must not touch its files.
   */
  static sweepScratch(dataDir: string): void {
    const dir = resolve(dataDir);
    rmSync(join(dir, '.tmp'), { recursive: true, force: true });
    for (const name of existsSync(dir) ? readdirSync(dir) : []) if (/^\.(backup|snapshot)-/.test(name)) rmSync(join(dir, name), { recursive: true, force: true });
  }

  /** The configured master key; a missing or malformed one is a configuration error. */
  static masterKey(config: StrataConfig): MasterKey | undefined {
    const e = config.encryption;
    if (!e.enabled) return undefined;
    try {
      return loadMasterKey({ file: e.master_key_file, value: e.master_key });
    } catch (err) {
      throw new ConfigError([`encryption: ${(err as Error).message}`]);
    }
  }

  /** The backup target as configured: a directory under the data dir unless told otherwise. */
  static async openBackupArchive(config: StrataConfig, dataDir: string): Promise<BackupArchive> {
    const target = config.backup.target.driver === 'fs' ? { ...config.backup.target, path: config.backup.target.path ?? join(dataDir, 'backups') } : config.backup.target;
    return new BackupArchive(await openObjectTier('backups', target, dataDir));
  }

  /** Continuous backup (segments + snapshots); only a primary ships, and only to a target its cluster owns. */
  backups: Backups | undefined;
  backupOwner: TierOwner | undefined;

  private async openBackups(): Promise<Backups> {
    const { config, metrics, log } = this;
    const archive = await StrataNode.openBackupArchive(config, this.dataDir);
    // The backup target is fenced like the object tiers: a restored copy configured with its
    // source's target would otherwise ship its own history next to the source's, and a later
    // restore could pick the copy's segments (found in review).
    this.backupOwner = new TierOwner('backup', archive.objects, { clusterId: () => this.sql.meta('cluster_id')!, nodeId: config.node.id });
    let warned = false;
    return new Backups(
      archive,
      { main: this.sql, billing: this.billingSql },
      () => {
        if (this.replication.role !== 'primary') return false;
        if (this.backupOwner!.owned()) return true;
        const owner = this.backupOwner!.owner();
        if (!warned) {
          log.error(
            { owner },
            `the backup target belongs to cluster ${owner?.cluster_id ?? '(unknown: its owner marker could not be read)'}, not to this node's (${this.sql.meta('cluster_id')}): this node does not write backups to it; give this node its own backup.target`,
          );
        }
        warned = true;
        return false;
      },
      { segmentSeconds: config.backup.segment_seconds, snapshotSeconds: config.backup.snapshot_interval_seconds, retentionDays: config.backup.retention_days, scratchDir: this.dataDir },
      {
        snapshot: () => metrics.backupLastSuccess.set(Date.now() / 1000),
        segmentLag: (s) => metrics.backupSegmentLag.set(s),
        verified: (at) => metrics.backupVerifyLastSuccess.set(at / 1000),
        drilled: (at, seconds) => {
          metrics.drillLastSuccess.set(at / 1000);
          metrics.drillDuration.set(seconds);
        },
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
      },
      async () => {
        await this.vectors.saveAll();
        const dir = resolve(config.vectors.index_dir ?? join(this.dataDir, 'indexes'));
        return readdirSync(dir)
          .filter((f) => f.endsWith('.usearch') || f.endsWith('.usearch.json'))
          .map((name) => ({ name, path: join(dir, name) }));
      },
    );
  }

  keyring!: Keyring;
  /** PII detection, off the event loop for long texts (the scan route, tags, redaction). */
  pii!: PiiScanner;
  textWorkers!: Array<{ close(): Promise<void> }>;
  /** Counts and logs a referenced object the tier no longer holds. */
  objectMissing!: (tier: string, key: string) => void;
  jobs!: JobStore;
  jobRunner!: JobRunner;
  datasets!: DatasetCatalog;
  feedback!: FeedbackStore;

  /** Queues a pipeline job over a dataset's raw files (202 at the API). */
  async startPipeline(actor: Actor, dataset: string, params: PipelineParams): Promise<Job> {
    const d = this.datasets.get(dataset);
    if (d.raw_files.length === 0) throw new InvalidInput(`dataset ${dataset} has no raw files to process`);
    return this.jobRunner.submit(actor, 'dataset_pipeline', { dataset, ...params }, { action: 'datasets.run_pipeline', target: `dataset:${dataset}` });
  }
  retention!: RetentionJob;

  /** The retention job: with dryRun, only what it would remove. Logged either way. */
  async runRetention(dryRun: boolean, now = Date.now()): Promise<RetentionReport> {
    const report = dryRun ? this.retention.plan(now) : await this.retention.apply(SYSTEM, now);
    this.log.info({ dry_run: dryRun, conversations: report.conversations.count, usage_events: report.usage.reduce((s, u) => s + u.events, 0), model_versions: report.model_versions.count }, 'retention job done');
    return report;
  }

  /** The object tiers, by name (the replication blob endpoint serves from them). */
  objectTiers: Record<'hot' | 'archive', ObjectStore> = {} as Record<'hot' | 'archive', ObjectStore>;

  private static replicationFor(
    config: StrataConfig,
    log: Logger,
    metrics: Metrics,
    sql: SqlStore,
    billingSql: SqlStore,
    vectors: VectorStore,
    cache: CacheTier,
    tiers: Record<'hot' | 'archive', ObjectStore>,
    lease: Lease | undefined,
    keyring: Keyring,
    tokens: TokenStore,
    users: UserStore,
  ): Replication {
    const r = config.replication;
    const self = config.node.id;
    // When the tiers are shared with the primary the object is already there and head() says so.
    const copyBlob = async (sha256: string, key: string, tierName: 'hot' | 'archive', fetchFromPrimary: (path: string) => Promise<Response>) => {
      if (!/^[0-9a-f]{64}$/.test(sha256)) return;
      const tier = tiers[tierName];
      if (await tier.head(key)) return;
      const res = await fetchFromPrimary(`/v1/replication/blobs/${sha256}`);
      if (res.status !== 200 || !res.body) throw new Error(`blob ${sha256} could not be copied from the primary: ${res.status}`);
      await tier.put(key, Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>), { expectedSha256: sha256 });
      log.info({ sha256, tier: tierName }, 'copied a blob from the primary');
    };
    return new Replication(
      { main: sql, billing: billingSql },
      {
        role: r.role,
        nodeId: self,
        primaryUrl: r.primary_url,
        token: r.token,
        synchronous: r.synchronous,
        syncMinReplicas: r.sync_min_replicas,
        syncTimeoutMs: r.sync_timeout_ms,
        lease,
        confirmEpoch: r.confirm_epoch,
        autoFailover: r.failover === 'auto',
        maxLagSeconds: r.max_lag_seconds,
        rollbackDir: join(resolve(config.storage.data_dir), 'rollback'),
        scratchDir: resolve(config.storage.data_dir),
      },
      {
        beforeApply: async (store, records, fetchFromPrimary) => {
          if (store !== 'main') return;
          // Records that place a blob (models, checkpoints) name its sha256, key and tier. Only
          // those: a dataset file's record names a sha256 and a key too, but is no row of
          // `blobs`, so the primary's blob route answers 404 for it — and a replica that asked
          // for it retried for ever, its main store stuck at that record (review).
          for (const r of records) {
            if (r.engine !== 'models' && r.engine !== 'checkpoints') continue;
            const p = r.payload as { sha256?: unknown; key?: unknown; tier?: unknown };
            if (typeof p.sha256 !== 'string' || typeof p.key !== 'string') continue;
            await copyBlob(p.sha256, p.key, p.tier === 'archive' ? 'archive' : 'hot', fetchFromPrimary);
          }
        },
        applied: async (store, records) => {
          if (store !== 'main') return;
          // Cached conversations and preferences may now be stale; indexes follow the records.
          if (records.some((x) => x.engine === 'conversations' || x.engine === 'users' || x.engine === 'usage')) cache.invalidateAll();
          await vectors.applyReplayed(records);
          metrics.changelogLsn.set(sql.writer.lastLsn);
        },
        bootstrapped: async (store, fetchFromPrimary) => {
          if (store !== 'main') return;
          // The keyring and user keys were replaced with the tables.
          keyring.reload();
          tokens.forgetAll();
          users.forgetAll();
          // Every blob the snapshot references must be here before it is served.
          for (const b of sql.db.prepare<{ sha256: string; key: string; tier: string }>('SELECT sha256, key, tier FROM blobs').all()) {
            await copyBlob(b.sha256, b.key, b.tier === 'archive' ? 'archive' : 'hot', fetchFromPrimary);
          }
          cache.invalidateAll();
          await vectors.reloadAll();
        },
        position: (store, p) => {
          metrics.replicationLag.labels(self, store).set(p.lagSeconds);
          metrics.replicationAppliedLsn.labels(self, store).set(p.applied);
        },
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
        rolledBack: (store, _file, records) => metrics.rollbackRecords.labels(store).inc(records),
      },
    );
  }

  get adminTokenFile(): string {
    return join(this.dataDir, 'admin.token');
  }

  /**
   * The first start of an empty data dir makes an admin token and leaves it in
   * <data_dir>/admin.token (0600). The log names the file, never the token.
   */
  private async ensureAdminToken(): Promise<void> {
    if (this.tokens.count() > 0) return;
    const created = await this.tokens.create(SYSTEM, { name: 'initial admin', role: 'admin' });
    writeFileSync(this.adminTokenFile, created.token + '\n', { mode: 0o600 });
    chmodSync(this.adminTokenFile, 0o600);
    this.log.warn({ file: this.adminTokenFile, token_id: created.id }, 'created the first admin token; read it from this file');
  }

  /**
   * Deletes a user and everything held about them in this node's engines, in one transaction:
   * conversations, messages and their archive segments, usage, preferences, tokens. Cache
   * entries and archive objects are cleared after the commit. Billing entries are kept: the
   * ledger is append-only and financial records outlive an account (see docs/security.md).
   */
  /**
   * GDPR erasure as a job (202 at the API): vectors whose metadata names the user, then in one
   * transaction every SQL row of the user and their key (crypto-shredding: what was sealed with
   * it — archives, backups, free pages — can no longer be read), then caches and archive
   * objects. Every step is idempotent, so a job cut short by a restart is simply run again.
   * Billing entries are kept: the ledger is append-only by law and holds no content.
   */
  async startErasure(actor: Actor, userId: string): Promise<Job> {
    // An erased id may be erased again: that runs the clean-up after the commit once more (a
    // job a crash or a failing object store cut short must be repeatable).
    if (!this.users.wasErased(userId)) this.users.get(userId);
    return this.jobRunner.submit(actor, 'erase_user', { user_id: userId }, { action: 'users.erase', target: `user:${userId}` });
  }

  private authFailures: AuthFailures | undefined;

  /** A request with a missing or bad token (auth-failures.ts). */
  authFailed(reason: 'missing' | 'invalid'): void {
    this.authFailures ??= new AuthFailures(this.metrics, this.sql.writer, () => this.replication.role === 'primary');
    this.authFailures.record(reason);
  }

  /** The user's data as a zip, streamed (user-export.ts). */
  exportUser(actor: Actor, userId: string): Promise<ReadableStream<Uint8Array>> {
    return exportUser(this, actor, userId);
  }

  /** One run of the conversation archive and retention job, logged with its figures. */
  async runConversationArchive(now = Date.now()) {
    this.log.info('conversation archive job started');
    const result = await this.conversationArchive.run(SYSTEM, now);
    if (result.compression_ratio !== null) this.metrics.conversationArchiveRatio.set(result.compression_ratio);
    this.metrics.archiveJobLastSuccess.set(Date.now() / 1000);
    this.log.info(result, 'conversation archive job done');
    return result;
  }

  status() {
    const replicas = this.replication.tracker.replicas();
    for (const r of replicas) {
      this.metrics.replicationLag.labels(r.node_id, 'main').set(r.lag_seconds);
      for (const [store, lsn] of Object.entries(r.stores)) this.metrics.replicationAppliedLsn.labels(r.node_id, store).set(lsn);
    }
    return {
      node_id: this.config.node.id,
      role: this.replication.role,
      epoch: this.replication.epoch(),
      lsn: this.sql.writer.lastLsn,
      billing_lsn: this.billingSql.writer.lastLsn,
      ...(this.replication.role === 'replica' ? { primary: this.replication.primaryUrl, replication: Object.fromEntries(this.replication.position) } : {}),
      replicas,
      ...(this.httpServer ? { http_server: this.httpServer } : {}),
      storage: this.storageStatus(),
    };
  }

  private storageStatus() {
    const size = (f: string) => {
      try {
        return statSync(f).size;
      } catch {
        return 0;
      }
    };
    const db = join(this.dataDir, 'strata.db');
    // statfs is missing on some runtimes; the field is then null.
    const tiers = Object.fromEntries(Object.entries(this.tierOwners).map(([t, o]) => [t, { owned: o.owned(), owner_cluster_id: o.owner()?.cluster_id ?? null }]));
    return { data_dir: this.dataDir, sql_driver: this.sql.db.driver, sql_bytes: size(db) + size(`${db}-wal`), free_bytes: this.metrics.disk()?.free ?? null, cluster_id: this.sql.meta('cluster_id'), tiers };
  }

  /** Per tier, whose it is (see tier-owner.ts). */
  tierOwners!: Record<'hot' | 'archive', TierOwner>;

  /**
   * Reads each tier's owner marker (a primary claims an unclaimed tier) and says so when this
   * node does not own one. A tier that cannot be read now is looked at again before each GC.
   */
  async checkTierOwnership(): Promise<void> {
    for (const owner of [...Object.values(this.tierOwners), ...(this.backupOwner ? [this.backupOwner] : [])]) {
      try {
        await owner.load(this.replication.role === 'primary');
        if (!owner.owned() && this.replication.role === 'primary') this.log.warn({ tier: owner.tier, owner: owner.owner() }, owner.refusal().message);
      } catch (err) {
        this.log.warn({ tier: owner.tier, err: (err as Error).message }, 'could not read the object tier owner marker; no deletes there until it can');
      }
    }
  }

  /**
   * Garbage collection, only where it cannot hurt another node: on a primary that may write
   * (a replica's view lags, and a fenced primary's is stale) and on tiers it owns.
   */
  async collectGarbage(actor: Actor, graceMs: number, uploadTtlMs: number) {
    if (!this.replication.writable()) throw new Conflict('garbage collection runs only on the primary, while it may write');
    // Read afresh each time: another node may have adopted the tier since.
    await this.checkTierOwnership();
    const foreign = Object.values(this.tierOwners).find((o) => !o.owned());
    if (foreign) throw foreign.refusal();
    return this.models.gc.collect(actor, graceMs, uploadTtlMs);
  }

  /** Takes an object tier over for this node's cluster (audited): its former owner's blobs become this node's garbage. */
  async adoptTier(actor: Actor, tier: 'hot' | 'archive') {
    if (this.replication.role !== 'primary') throw new Conflict('only a primary adopts an object tier');
    const before = this.tierOwners[tier].owner();
    const record = await this.tierOwners[tier].adopt();
    await this.sql.writer.write(actor, (tx) => tx.audit('objects.adopt_tier', `tier:${tier}`, { from_cluster: before?.cluster_id ?? null, to_cluster: record.cluster_id }));
    this.log.warn({ tier, from: before, to: record }, 'adopted an object tier');
    return { tier, owner: record, previous_owner: before ?? null };
  }

  private background: BackgroundJobs | undefined;

  /** Periodic work of a serving node, not of offline CLI commands (background-jobs.ts). */
  startBackgroundJobs(): void {
    this.background ??= new BackgroundJobs(this);
    this.background.start();
  }

  /**
   * Drops change-log records older than replication.log_retention_seconds. Replicas further
   * behind bootstrap again (410 log_pruned). Point-in-time recovery will need its segments
   * shipped before this runs (see docs/replication-and-recovery.md).
   */
  pruneChangeLog(now = Date.now()): number {
    if (this.replication.role !== 'primary') return 0;
    const before = now - this.config.replication.log_retention_seconds * 1000;
    let pruned = 0;
    for (const [name, s] of [['main', this.sql], ['billing', this.billingSql]] as const) {
      // Never past what the backup has: a restore needs every record after its snapshot.
      const shipped = this.backups ? this.backups.shippedLsn(name) : Infinity;
      pruned += s.changes.prune(Math.min(s.writer.lastLsn - 1, shipped), before);
    }
    return pruned;
  }
  async close(): Promise<void> {
    this.background?.stop();
    this.authFailures?.close();
    // Every step runs even when one before it fails (a full disk fails several): a store left
    // open is worse than a step that logged its error.
    const steps: Array<[string, () => Promise<unknown>]> = [
      ['stopping jobs', () => this.jobRunner.stop()],
      ['stopping replication', () => this.replication.stop()],
      ['stopping backups', async () => this.backups?.stop()],
      ['saving vector indexes (the next start replays or rebuilds them)', () => this.vectors.close()],
      ['closing strata.db', () => this.sql.close()],
      ['closing billing.db', () => this.billingSql.close()],
      ['closing the cache', () => this.cache.close()],
      ['stopping the text workers', () => Promise.all(this.textWorkers.map((w) => w.close()))],
    ];
    for (const [what, step] of steps) {
      await step().catch((err: unknown) => this.log.error({ err }, `shutdown: ${what} failed`));
    }
    this.requestLog.flush();
  }
}
