import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/daemon.js';

const UNIT = join(ROOT, 'deploy/systemd/strata.service');
const DRILL = join(ROOT, 'deploy/systemd/strata-drill.service');
const DRILL_TIMER = join(ROOT, 'deploy/systemd/strata-drill.timer');
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

describe('deploy/systemd/strata.service', () => {
  it('has the hardening the README promises', () => {
    const unit = readFileSync(UNIT, 'utf8');
    for (const line of [
      'User=strata',
      'StateDirectory=strata',
      'ProtectSystem=strict',
      'ReadWritePaths=/var/lib/strata',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'LimitNOFILE=65536',
      'Restart=on-failure',
      'TimeoutStopSec=45',
    ]) {
      expect(unit).toContain(line);
    }
    // V8's JIT aborts at start under this setting.
    expect(unit).not.toMatch(/^MemoryDenyWriteExecute=yes/m);
  });

  it('runs the DR drill monthly as a oneshot of the same install', () => {
    const service = readFileSync(DRILL, 'utf8');
    expect(service).toMatch(/^Type=oneshot$/m);
    expect(service).toContain('cli.js drill --config /etc/strata/strata.yaml --set storage.data_dir=/var/lib/strata');
    const timer = readFileSync(DRILL_TIMER, 'utf8');
    expect(timer).toMatch(/^OnCalendar=monthly$/m);
    expect(timer).toMatch(/^Persistent=true$/m);
    expect(timer).toMatch(/^Unit=strata-drill\.service$/m);
  });

  // systemd-analyze ships with systemd on Debian; CI must have it rather than skip.
  it.runIf(hasAnalyze || process.env.CI === 'true')('passes systemd-analyze verify apart from the binary path', () => {
    const r = spawnSync('systemd-analyze', ['verify', UNIT, DRILL, DRILL_TIMER], { encoding: 'utf8' });
    const complaints = (r.stderr + r.stdout)
      .split('\n')
      .filter((l) => l.trim() !== '')
      .filter((l) => !/\/usr\/bin\/node|is not executable|No such file/.test(l));
    expect(complaints).toEqual([]);
  });
});
