import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/daemon/cli-commands.js';
import { CLI } from '../helpers/daemon.js';

// `strata <command> --help` for every command: its usage, what it does and an example, on
// stdout with exit 0; `strata --help` lists them all.

describe('strata --help', () => {
  it('explains every command with an example', () => {
    const all = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    expect(all.status).toBe(0);
    for (const [name, c] of Object.entries(COMMANDS)) {
      expect(all.stdout, name).toContain(c.usage);
      const r = spawnSync(process.execPath, [CLI, ...name.split(' '), '--help'], { encoding: 'utf8' });
      expect(r.status, name).toBe(0);
      expect(r.stdout, name).toContain(`Usage: ${c.usage}`);
      expect(r.stdout, name).toContain(`Example:\n  ${c.example}`);
      expect(c.example.startsWith(`strata ${name}`), name).toBe(true);
    }
  });

  it('a group word alone explains the command under it (strata token --help)', () => {
    const r = spawnSync(process.execPath, [CLI, 'token', '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`Usage: ${COMMANDS['token create']!.usage}`);
  });

  it('config reference prints the generated configuration reference', () => {
    const r = spawnSync(process.execPath, [CLI, 'config', 'reference'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('| `datasets.workers` |');
    expect(r.stdout).toContain('| `server.listen` | string | `"127.0.0.1:7070"` |');
  });
});
