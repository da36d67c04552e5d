import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, defaultConfigFile, loadConfig, parseConfig } from '../../src/daemon/config.js';
import { CLI, ROOT, tempDir } from '../helpers/daemon.js';

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('the embedded default file is valid and keeps everything local', () => {
    const cfg = loadConfig(defaultConfigFile());
    expect(cfg.server.listen).toBe('127.0.0.1:7070');
    expect(cfg.storage.data_dir).toBe('./data');
    expect(cfg.server.max_body_bytes).toBe(16 * 1024 * 1024);
    expect(cfg.tiers.free).toEqual({ daily_token_limit: 1_000_000, conversation_retention_days: 7, conversation_hot_days: 2 });
    expect(cfg.tiers.pro!.conversation_retention_days).toBe(30);
    expect(Object.keys(cfg.tiers)).toEqual(['free', 'plus', 'pro', 'enterprise']);
  });

  it('the production example is valid', () => {
    const cfg = loadConfig(join(ROOT, 'config/production.example.yaml'), { env: { MINIO_ACCESS_KEY: 'ak', MINIO_SECRET_KEY: 'sk', ARCHIVE_ACCESS_KEY: 'a2', ARCHIVE_SECRET_KEY: 's2', BACKUP_ACCESS_KEY: 'b1', BACKUP_SECRET_KEY: 'b2' } });
    expect(cfg.server.tls?.cert_file).toBe('/etc/strata/tls/server.crt');
    expect(cfg.objects.hot).toMatchObject({ driver: 's3', access_key: 'ak', bucket: 'strata-hot' });
    expect(cfg.cache).toMatchObject({ driver: 'redis', redis: { mode: 'standalone', url: 'redis://127.0.0.1:6379' } });
    expect(cfg.usage.prices['*']).toEqual({ input_micros_per_million_tokens: 100000, output_micros_per_million_tokens: 200000 });
    expect(() => loadConfig(join(ROOT, 'config/production.example.yaml'), { env: {} })).toThrow(ConfigError);
  });

  it('a redis cache must say where redis is, for its mode', () => {
    expect(problems(() => parseConfig('cache:\n  driver: redis\n'))).toEqual(['cache: driver redis needs a redis: section']);
    expect(problems(() => parseConfig('cache:\n  driver: redis\n  redis:\n    mode: sentinel\n'))[0]).toMatch(/^cache\.redis: mode sentinel needs sentinels and master_name/);
    expect(problems(() => parseConfig('cache:\n  driver: redis\n  redis:\n    mode: cluster\n'))[0]).toMatch(/^cache\.redis: mode cluster needs nodes/);
  });

  it('an unknown key is an error naming its dotted path', () => {
    expect(problems(() => parseConfig('server:\n  listen: 127.0.0.1:1\n  lisen: x\n'))).toEqual(['server.lisen: unknown key']);
    expect(problems(() => parseConfig('bogus: 1\n'))).toEqual(['bogus: unknown key']);
  });

  it('a wrong type names the path and what was expected', () => {
    const [p] = problems(() => parseConfig('server:\n  max_body_bytes: lots\n'));
    expect(p).toMatch(/^server\.max_body_bytes: .*number/);
    const [q] = problems(() => parseConfig('server:\n  listen: "7070"\n'));
    expect(q).toMatch(/^server\.listen: expected "host:port"/);
    const [r] = problems(() => parseConfig('tiers:\n  free:\n    daily_token_limit: -5\n    conversation_retention_days: 7\n'));
    expect(r).toMatch(/^tiers\.free\.daily_token_limit: /);
  });

  it('substitutes ${ENV} in any string and names a missing variable', () => {
    const cfg = parseConfig('node:\n  id: ${NODE_NAME}\nstorage:\n  data_dir: ${DIR:-/srv/x}\n', { env: { NODE_NAME: 'n7' } });
    expect(cfg.node.id).toBe('n7');
    expect(cfg.storage.data_dir).toBe('/srv/x');
    expect(problems(() => parseConfig('node:\n  id: ${NOPE_NOT_SET}\n', { env: {} }))).toEqual([
      'node.id: environment variable NOPE_NOT_SET is not set',
    ]);
  });

  it('--set overrides apply before validation, values parsed as YAML', () => {
    const cfg = parseConfig('{}', { overrides: ['server.listen=0.0.0.0:9', 'metrics.enabled=false', 'tiers.free.daily_token_limit=5', 'tiers.free.conversation_retention_days=1'] });
    expect(cfg.server.listen).toBe('0.0.0.0:9');
    expect(cfg.metrics.enabled).toBe(false);
    expect(cfg.tiers).toEqual({ free: { daily_token_limit: 5, conversation_retention_days: 1, conversation_hot_days: 3 } });
    expect(problems(() => parseConfig('{}', { overrides: ['server.port=1'] }))).toEqual(['server.port: unknown key']);
    expect(problems(() => parseConfig('{}', { overrides: ['noequals'] }))[0]).toMatch(/expected key.path=value/);
  });

  it('check-config exits 2 with the bad key on stderr, 0 when valid', () => {
    const dir = tempDir();
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'server:\n  listen: 127.0.0.1:7070\n  tls_cert: x\n');
    const r = spawnSync(process.execPath, [CLI, 'check-config', '--config', bad], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('server.tls_cert: unknown key');
    const ok = spawnSync(process.execPath, [CLI, 'check-config', '--set', 'node.id=x1'], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toContain('config ok: node x1');
    const usage = spawnSync(process.execPath, [CLI, 'frobnicate'], { encoding: 'utf8' });
    expect(usage.status).toBe(2);
    const version = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('token create');
  });
});
