import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort } from './redis.js';
import { tempDir } from './daemon.js';

// One real etcd member per call (Debian's etcd-server), on free loopback ports in a throwaway
// dir. Without etcd the tests that need it skip — except under CI=true, where they fail.

export const HAS_ETCD = spawnSync('etcd', ['--version']).status === 0;
if (!HAS_ETCD && process.env.CI === 'true') throw new Error('etcd is not installed, and CI=true requires the etcd tests to run (apt-get install etcd-server)');

export interface Etcd {
  url: string;
  stop(): Promise<void>;
}

export async function startEtcd(): Promise<Etcd> {
  const [client, peer] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${client}`;
  const proc: ChildProcess = spawn(
    'etcd',
    ['--name', 'm1', '--data-dir', tempDir('strata-etcd-'), '--listen-client-urls', url, '--advertise-client-urls', url, '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--initial-cluster', `m1=http://127.0.0.1:${peer}`],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok && ((await res.json()) as { health?: string }).health === 'true') break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error('etcd did not become healthy in 20 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}
