import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { row, spawnUntil, stop, type BenchOptions, type ResultRow, daemonFlags, freePort, untilHealthy } from './lib.js';
import { alternate, wrk } from './load.js';

// http_floor: what one request costs Strata beyond the framework's own, as a ratio to a bare
// hono app on the same adapter, both driven by wrk at 64 connections in the same run:
// GET /healthz (public), and GET /v1/cache (a bearer token, routing, validation, metrics and
// the request log around a small JSON answer that touches no engine).

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(here, '../src/daemon/cli.js');
const PEER = join(here, 'peers/hono-floor-server.js');
const CONNECTIONS = 64;

export async function httpFloor(opts: BenchOptions): Promise<ResultRow[]> {
  const seconds = opts.quick ? 2 : 5;
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-floor-'));
  try {
    const strata = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', 'server.listen=127.0.0.1:0', '--set', `storage.data_dir=${join(dir, 'strata')}`, '--set', 'backup.enabled=false'], /"url":"(http:\/\/[^"]+)"/);
    const token = readFileSync(join(dir, 'strata', 'admin.token'), 'utf8').trim();
    const peer = await spawnUntil(process.execPath, [PEER, token], /listening (http:\/\/\S+)/);
    const auth = { Authorization: `Bearer ${token}` };
    const rounds = opts.quick ? 2 : 3;
    const pub = await alternate(rounds, () => wrk(strata.match, { paths: ['/healthz'] }, CONNECTIONS, seconds), () => wrk(peer.match, { paths: ['/healthz'] }, CONNECTIONS, seconds));
    const authed = await alternate(rounds, () => wrk(strata.match, { paths: ['/v1/cache'], headers: auth }, CONNECTIONS, seconds), () => wrk(peer.match, { paths: ['/v1/cache'], headers: auth }, CONNECTIONS, seconds));
    // The request log's share: the same daemon build with log.level=warn (no access lines).
    // At warn it does not log its URL either, so it gets a port chosen here.
    const port = await freePort();
    const quiet = await spawnUntil(process.execPath, [...daemonFlags(), CLI, 'serve', '--set', `server.listen=127.0.0.1:${port}`, '--set', `storage.data_dir=${join(dir, 'quiet')}`, '--set', 'backup.enabled=false', '--set', 'log.level=warn'], /created the first admin token/);
    quiet.match = `http://127.0.0.1:${port}`;
    await untilHealthy(quiet.match);
    const logged = await alternate(rounds, () => wrk(strata.match, { paths: ['/healthz'] }, CONNECTIONS, seconds), () => wrk(quiet.match, { paths: ['/healthz'] }, CONNECTIONS, seconds));
    await stop(quiet.proc);
    await stop(strata.proc);
    await stop(peer.proc);
    const [sPublic, pPublic, sAuth, pAuth] = [pub.strata, pub.peer, authed.strata, authed.peer];
    for (const [k, v] of Object.entries({ sPublic, sAuth, pPublic, pAuth })) if (v.errors) throw new Error(`http_floor ${k} saw ${v.errors} errors`);
    const notes = `wrk, 1 thread, ${CONNECTIONS} connections, best of ${rounds} alternating runs of ${seconds} s`;
    const peerName = 'bare hono on @hono/node-server, same routes';
    return [
      row({ name: 'http_floor', metric: 'public GET /healthz', unit: 'req/s', value: Math.round(sPublic.perSecond), peer: peerName, peer_value: Math.round(pPublic.perSecond), better: 'higher', notes: `${notes}; goal ≥ 0.8` }),
      row({ name: 'request_log', metric: 'GET /healthz with an access line per request', unit: 'req/s', value: Math.round(logged.strata.perSecond), peer: 'the same daemon with log.level=warn', peer_value: Math.round(logged.peer.perSecond), better: 'higher', notes: `${notes}; goal: the log costs < 10 % (ratio ≥ 0.9)` }),
      row({ name: 'http_floor', metric: 'authenticated GET /v1/cache', unit: 'req/s', value: Math.round(sAuth.perSecond), peer: peerName, peer_value: Math.round(pAuth.perSecond), better: 'higher', notes: `${notes}; goal ≥ 0.6` }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
