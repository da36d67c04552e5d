import type { PutCondition, VersionedObject } from '../engines/objects/object-store.js';
import type { LeaseStore } from './lease.js';

// The lease in etcd v3, for nodes that share no object tier (the way Patroni uses a DCS). The
// lease logic stays in lease.ts; this gives it the three operations it needs, through etcd's
// documented JSON gateway (POST /v3/kv/range, /v3/kv/txn, /v3/kv/deleterange): a key's
// mod_revision is its version, and a conditional put is one transaction comparing it (or
// create_revision = 0 for "absent"). No gRPC client: the gateway ships with every etcd ≥ 3.4.
// Endpoints are tried in order; the first that answers serves the call.

export class EtcdLeaseStore implements LeaseStore {
  readonly name: string;

  constructor(
    private readonly endpoints: string[],
    private readonly prefix = '/strata/',
  ) {
    this.name = `etcd ${endpoints.join(',')}`;
  }

  async readVersioned(key: string): Promise<VersionedObject | undefined> {
    const res = (await this.call('/v3/kv/range', { key: b64(this.prefix + key) })) as { kvs?: Array<{ value?: string; mod_revision: string }> };
    const kv = res.kvs?.[0];
    if (!kv) return undefined;
    return { body: Buffer.from(kv.value ?? '', 'base64'), version: String(kv.mod_revision) };
  }

  async putIf(key: string, body: Buffer, condition: PutCondition): Promise<string | undefined> {
    const k = b64(this.prefix + key);
    const compare =
      'ifAbsent' in condition
        ? { key: k, target: 'CREATE', result: 'EQUAL', create_revision: '0' }
        : { key: k, target: 'MOD', result: 'EQUAL', mod_revision: condition.ifVersion };
    const res = (await this.call('/v3/kv/txn', { compare: [compare], success: [{ request_put: { key: k, value: body.toString('base64') } }] })) as {
      succeeded?: boolean;
      header: { revision: string };
    };
    // The put is the transaction's only write, so the key's new mod_revision is the header's revision.
    return res.succeeded ? String(res.header.revision) : undefined;
  }

  async delete(key: string): Promise<void> {
    await this.call('/v3/kv/deleterange', { key: b64(this.prefix + key) });
  }

  private async call(path: string, body: unknown): Promise<unknown> {
    let last: unknown;
    for (const endpoint of this.endpoints) {
      try {
        const res = await fetch(new URL(path, endpoint), { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(2000) });
        if (!res.ok) throw new Error(`etcd ${endpoint}${path} answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
        return await res.json();
      } catch (err) {
        last = err;
      }
    }
    throw last instanceof Error ? last : new Error(String(last));
  }
}

function b64(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64');
}
