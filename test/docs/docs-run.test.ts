import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../helpers/redis.js';
import { ROOT, startDaemon, tempDir } from '../helpers/daemon.js';
import { blocks, read } from './markdown.js';

// Docs that run: every `sh` block of docs/getting-started.md and of the README's tour is
// executed, in order, in one bash with errexit, as a reader would paste them. Ports are the
// only thing replaced (a fixed one could be taken on a CI machine).

function bash(script: string, cwd: string): { status: number | null; out: string } {
  const r = spawnSync('bash', ['-e', '-c', script], { cwd, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

/** A directory that looks like an unpacked, built package: the docs' relative paths work in it. */
function scratchPackage(): string {
  const dir = tempDir('strata-docs-run-');
  for (const entry of ['dist', 'node_modules', 'config', 'package.json']) symlinkSync(join(ROOT, entry), join(dir, entry));
  return dir;
}

describe('docs that run', () => {
  it('getting started: every sh block, in order', async () => {
    const port = await freePort();
    const script = blocks(read('docs/getting-started.md'), 'sh').join('\n').replaceAll('127.0.0.1:7071', `127.0.0.1:${port}`);
    expect(script).toContain('serve --config');
    const r = bash(script, scratchPackage());
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('config ok');
    expect(r.out).toContain('{"status":"ok"}');
    expect(r.out).toMatch(/strata_[A-Za-z0-9_-]{20,}/);
    expect(r.out).toContain('Example:');
  }, 120_000);

  it('the README tour: every sh block against a real daemon', async () => {
    const dir = scratchPackage();
    mkdirSync(join(dir, 'data'));
    const d = await startDaemon({ dataDir: join(dir, 'data') });
    try {
      const script = blocks(read('README.md'), 'sh')
        .filter((b) => !b.includes('npm ci'))
        .join('\n')
        .replaceAll('http://127.0.0.1:7070', d.url);
      const r = bash(script, dir);
      expect(r.status, r.out).toBe(0);
      // The conversation read back, the first bytes of the ranged download, the nearest vector, the metrics.
      expect(r.out).toContain('user: What is HNSW?');
      expect(r.out).toContain('assistant: A graph index for nearest neighbours.');
      expect(r.out).toMatch(/^\s*([0-9a-f]{2} ){15}[0-9a-f]{2}\s*$/m);
      expect(r.out).toMatch(/^a$/m);
      expect(r.out).toContain('strata_');
    } finally {
      await d.stop();
    }
  }, 120_000);
});
