import client from 'prom-client';
import { RequestHistogram } from './request-histogram.js';
import { runtimeName, VERSION } from './version.js';

// One registry per node (not prom-client's global one), so tests can run several nodes in
// one process. Every metric a dashboard uses is registered here at start, even at zero.
// Labels hold route templates and enums only — never ids, keys or raw paths.

export class Metrics {
  readonly registry = new client.Registry();

  /** Resolved once per route, method and status (see request-histogram.ts). */
  readonly httpDuration = new RequestHistogram(
    'strata_http_request_duration_seconds',
    'HTTP request latency by method, route template and status',
    // Default buckets stop at 10 s; streamed transfers take longer.
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    this.registry,
  );

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.httpDuration.observe(method, route, status, seconds);
  }

  readonly sqlTransactionDuration = new client.Histogram({
    name: 'strata_sql_transaction_duration_seconds',
    help: 'Duration of write transactions (one per group-commit batch), including the fsync',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  });

  readonly sqlBatchCalls = new client.Histogram({
    name: 'strata_sql_group_commit_calls',
    help: 'Write calls committed together in one transaction',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [this.registry],
  });

  readonly changelogLsn = new client.Gauge({
    name: 'strata_changelog_lsn',
    help: 'LSN of the last committed change-log record',
    registers: [this.registry],
  });

  /** Requests being served now: a plain number per request, read into the gauge at scrape. */
  inflight = 0;

  readonly inflightRequests: client.Gauge = new client.Gauge({
    name: 'strata_http_requests_in_flight',
    help: 'HTTP requests being served now',
    registers: [this.registry],
    collect: (): void => this.inflightRequests.set(this.inflight),
  });

  readonly modelCacheHits = new client.Counter({ name: 'strata_model_cache_hits_total', help: 'Model file reads served from the local cache', registers: [this.registry] });
  readonly modelCacheMisses = new client.Counter({ name: 'strata_model_cache_misses_total', help: 'Model file reads that had to fetch from the object tier', registers: [this.registry] });
  readonly modelCacheEvictions = new client.Counter({ name: 'strata_model_cache_evictions_total', help: 'Files evicted from the model cache', registers: [this.registry] });
  readonly objectDeletesSkipped = new client.Counter({
    name: 'strata_object_deletes_skipped_total',
    help: 'Deletes not done because the object tier belongs to another cluster (a restored copy sharing it)',
    labelNames: ['tier'],
    registers: [this.registry],
  });
  readonly objectsMissing = new client.Counter({
    name: 'strata_objects_missing_total',
    help: 'Reads of a referenced object (model file, shard, archive) the object tier no longer holds: data loss; the log names the key',
    labelNames: ['tier'],
    registers: [this.registry],
  });
  readonly modelCacheBytes = new client.Gauge({ name: 'strata_model_cache_bytes', help: 'Bytes held in the model cache', registers: [this.registry] });

  readonly objectTransferBytes = new client.Counter({
    name: 'strata_object_transfer_bytes_total',
    help: 'Bytes written to (in) and read from (out) each object tier',
    labelNames: ['tier', 'direction'] as const,
    registers: [this.registry],
  });

  readonly cacheRequests = new client.Counter({
    name: 'strata_cache_requests_total',
    help: 'Cache lookups by use and result (hit or miss; a degraded cache counts as a miss)',
    labelNames: ['use', 'result'] as const,
    registers: [this.registry],
  });
  readonly cacheDegraded = new client.Gauge({
    name: 'strata_cache_degraded',
    help: '1 while the cache backend (Redis) is unreachable and reads fall back to SQLite',
    registers: [this.registry],
  });
  readonly redisConnected = new client.Gauge({
    name: 'strata_redis_connected',
    help: '1 while connected to Redis; 0 when disconnected (absent value with the memory driver: always 0)',
    registers: [this.registry],
  });
  readonly authFailures = new client.Counter({ name: 'strata_auth_failures_total', help: 'Requests refused for a missing, unknown or revoked token', labelNames: ['reason'], registers: [this.registry] });
  readonly rateLimited = new client.Counter({ name: 'strata_rate_limited_total', help: 'Requests refused by the per-token rate limit', registers: [this.registry] });
  readonly quotaRefusals = new client.Counter({ name: 'strata_quota_refusals_total', help: 'Usage calls refused because a token limit would be passed', registers: [this.registry] });
  readonly conversationsArchived = new client.Counter({ name: 'strata_conversations_archived_total', help: 'Conversations moved to the archive tier', registers: [this.registry] });
  readonly conversationArchiveBytes = new client.Counter({
    name: 'strata_conversation_archive_bytes_total',
    help: 'Bytes of archived conversations: raw MessagePack and stored (compressed)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly conversationArchiveRatio = new client.Gauge({
    name: 'strata_conversation_archive_compression_ratio',
    help: 'Raw / stored bytes over the last archive run that archived anything',
    registers: [this.registry],
  });
  readonly conversationsDeleted = new client.Counter({ name: 'strata_conversations_retention_deleted_total', help: 'Conversations deleted by tier retention', registers: [this.registry] });
  readonly archiveJobProcessed = new client.Gauge({
    name: 'strata_conversation_archive_job_processed',
    help: 'Conversations handled so far by the running (or last) archive job, by step',
    labelNames: ['step'] as const,
    registers: [this.registry],
  });
  readonly archiveJobLastSuccess = new client.Gauge({
    name: 'strata_conversation_archive_job_last_success_timestamp_seconds',
    help: 'Unix time the conversation archive job last finished without error',
    registers: [this.registry],
  });

  readonly vectorQueryDuration = new client.Histogram({
    name: 'strata_vector_query_duration_seconds',
    help: 'Vector query latency inside the engine, by plan (hnsw, filtered_hnsw, exact)',
    labelNames: ['plan'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly embeddingCacheHits = new client.Counter({ name: 'strata_embedding_cache_hits_total', help: 'Embedding lookups answered from the cache', registers: [this.registry] });
  readonly embeddingCacheMisses = new client.Counter({ name: 'strata_embedding_cache_misses_total', help: 'Embedding lookups not in the cache', registers: [this.registry] });

  readonly rollbackRecords = new client.Counter({
    name: 'strata_rollback_records_total',
    help: 'Change records only this node had, discarded when it rejoined a newer primary and kept in rollback files',
    labelNames: ['store'] as const,
    registers: [this.registry],
  });
  readonly replicationLag = new client.Gauge({
    name: 'strata_replication_lag_seconds',
    help: 'How far a replica is behind the primary, per store (on a primary: each replica it serves; on a replica: itself)',
    labelNames: ['replica', 'store'] as const,
    registers: [this.registry],
  });
  readonly replicationAppliedLsn = new client.Gauge({
    name: 'strata_replication_applied_lsn',
    help: 'Last change-log LSN a replica has applied, per store',
    labelNames: ['replica', 'store'] as const,
    registers: [this.registry],
  });

  readonly backupLastSuccess = new client.Gauge({ name: 'strata_backup_last_success_timestamp_seconds', help: 'Unix time of the last backup snapshot written', registers: [this.registry] });
  readonly backupSegmentLag = new client.Gauge({ name: 'strata_backup_segment_lag_seconds', help: 'Age of the oldest commit not yet shipped to the backup target (0 when all is shipped)', registers: [this.registry] });
  readonly backupVerifyLastSuccess = new client.Gauge({ name: 'strata_backup_verify_last_success_timestamp_seconds', help: 'Unix time of the last successful `strata backup verify` against this target', registers: [this.registry] });
  readonly drillLastSuccess = new client.Gauge({ name: 'strata_drill_last_success_timestamp_seconds', help: 'Unix time of the last successful `strata drill` (restore, serve, probe) against this backup target', registers: [this.registry] });
  readonly drillDuration = new client.Gauge({ name: 'strata_drill_duration_seconds', help: 'How long the last successful `strata drill` took, restore to probes', registers: [this.registry] });

  /** Set by the node: per collection, vectors and estimated index bytes, read at scrape time. */
  vectorCollections: () => Array<{ name: string; count: number; memory_bytes: number }> = () => [];

  /** Set by the node: entries in the billing ledger, read at scrape time. */
  ledgerEntries: () => number = () => 0;

  /** Set by the node: the data dir's file system, read at scrape time (undefined where statfs is missing). */
  disk: () => { free: number; total: number } | undefined = () => undefined;

  /** Set by the node: jobs per state, read at scrape time. */
  jobsByState: () => Array<{ state: string; count: number }> = () => [];

  /** Set by the node once the registry is open: bytes of blobs per tier, read at scrape time. */
  objectBytesByTier: () => Array<{ tier: string; bytes: number }> = () => [];

  constructor(nodeId: string) {
    const metrics = this;
    new client.Gauge({
      name: 'strata_objects_bytes',
      help: 'Bytes of referenced blobs in each object tier',
      labelNames: ['tier'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        this.labels('hot').set(0);
        this.labels('archive').set(0);
        for (const { tier, bytes } of metrics.objectBytesByTier()) this.labels(tier).set(bytes);
      },
    });
    new client.Gauge({
      name: 'strata_disk_free_bytes',
      help: 'Bytes available to the daemon on the file system holding the data dir',
      registers: [this.registry],
      collect() {
        this.set(metrics.disk()?.free ?? 0);
      },
    });
    new client.Gauge({
      name: 'strata_disk_total_bytes',
      help: 'Size of the file system holding the data dir',
      registers: [this.registry],
      collect() {
        this.set(metrics.disk()?.total ?? 0);
      },
    });
    new client.Gauge({
      name: 'strata_jobs',
      help: 'Jobs (erasures, dataset pipelines) by state',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const state of ['queued', 'running', 'done', 'failed', 'cancelled']) this.labels(state).set(0);
        for (const j of metrics.jobsByState()) this.labels(j.state).set(j.count);
      },
    });
    new client.Gauge({
      name: 'strata_billing_ledger_entries',
      help: 'Entries in the billing ledger',
      registers: [this.registry],
      collect() {
        this.set(metrics.ledgerEntries());
      },
    });
    new client.Gauge({
      name: 'strata_vectors',
      help: 'Vectors stored per collection',
      labelNames: ['collection'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of metrics.vectorCollections()) this.labels(c.name).set(c.count);
      },
    });
    new client.Gauge({
      name: 'strata_vector_index_bytes',
      help: 'Estimated memory of each collection index (from its last saved size)',
      labelNames: ['collection'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of metrics.vectorCollections()) this.labels(c.name).set(c.memory_bytes);
      },
    });
    for (const result of ['hit', 'miss']) for (const use of ['conversations', 'preferences']) this.cacheRequests.labels(use, result).inc(0);
    for (const kind of ['raw', 'stored']) this.conversationArchiveBytes.labels(kind).inc(0);
    for (const tier of ['hot', 'archive']) for (const direction of ['in', 'out']) this.objectTransferBytes.labels(tier, direction).inc(0);
    new client.Gauge({
      name: 'strata_build_info',
      help: 'Always 1; labels say which build and runtime this node runs',
      labelNames: ['version', 'runtime', 'runtime_version', 'node_id'] as const,
      registers: [this.registry],
    })
      .labels(VERSION, runtimeName(), process.version, nodeId)
      .set(1);
    try {
      client.collectDefaultMetrics({ register: this.registry });
    } catch {
      // Some process metrics rely on Node internals that Bun or Deno lack; the rest still work.
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
