#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ROLES, type Role } from '../engines/auth/token-store.js';
import { InvalidInput } from '../engines/errors.js';
import { ConfigError, defaultConfigFile, loadConfig, type StrataConfig } from './config.js';
import { createLogger } from './logger.js';
import { startServer } from './server.js';
import { backupVerifyCommand, drillCommand, keysRotateCommand, promoteCommand, restoreCommand, rollbackShowCommand } from './cli-recovery.js';
import { DataDirLock } from './data-dir-lock.js';
import { StrataNode } from './strata-node.js';
import { VERSION } from './version.js';
import { configReference } from './config-reference.js';
import { COMMANDS } from './cli-commands.js';

// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.

const OPTIONS = `Options:
  --config FILE          the YAML config (default: the embedded config/strata.yaml)
  --set key.path=value   override one key before validation; the value is parsed as YAML
                         (repeatable), e.g. --set server.listen=0.0.0.0:7070
  -h, --help             this text; "strata <command> --help" for one command`;

const HELP = `strata ${VERSION} — a self-hosted storage node for AI platforms

Usage:
${Object.values(COMMANDS).map((c) => `  ${c.usage}`).join('\n')}
  strata --help | --version

${OPTIONS}

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.`;

function commandHelp(name: string): string {
  const c = COMMANDS[name]!;
  // `config reference` reads no config, so the config options are not its to list.
  return `Usage: ${c.usage}\n\n${c.does}\n\nExample:\n  ${c.example}\n${name === 'config reference' ? '' : `\n${OPTIONS}\n`}`;
}

/** The command `strata <words> --help` asks about: itself, or the one command under a group ("token" → "token create"). */
function helpFor(words: string): string | undefined {
  if (COMMANDS[words]) return words;
  const under = Object.keys(COMMANDS).filter((c) => words && c.startsWith(`${words} `));
  return under.length === 1 ? under[0] : undefined;
}

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        set: { type: 'string', multiple: true },
        role: { type: 'string' },
        'user-id': { type: 'string' },
        name: { type: 'string' },
        to: { type: 'string' },
        'target-dir': { type: 'string' },
        'new-key-file': { type: 'string' },
        'dry-run': { type: 'boolean' },
        replace: { type: 'boolean' },
        s3: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    const name = helpFor(positionals.join(' '));
    process.stdout.write(name ? commandHelp(name) : HELP + '\n');
    return 0;
  }
  if (values.version) {
    process.stdout.write(VERSION + '\n');
    return 0;
  }
  const command = positionals.join(' ');
  const config = () => loadConfig(values.config ?? defaultConfigFile(), { overrides: values.set ?? [] });
  if (positionals[0] === 'rollback' && positionals[1] === 'show') {
    // The config only matters for opening sealed fields; a file can be read without one.
    const cfg = values.config || values.set ? config() : undefined;
    return rollbackShowCommand(cfg, positionals[2]);
  }
  switch (command) {
    case 'serve':
      return serveCommand(config());
    case 'config reference':
      process.stdout.write(configReference());
      return 0;
    case 'check-config': {
      const cfg = config();
      process.stdout.write(`config ok: node ${cfg.node.id}, listen ${cfg.server.listen}, data_dir ${cfg.storage.data_dir}\n`);
      return 0;
    }
    case 'token create': {
      const role = values.role as Role | undefined;
      if (!role || !ROLES.includes(role)) throw new UsageError(`--role must be one of ${ROLES.join(', ')}`);
      const cfg = config();
      const node = await StrataNode.open(cfg, createLogger('silent'));
      try {
        const t = await node.tokens.create({ tokenId: 'cli' }, { name: values.name ?? 'cli', role, user_id: values['user-id'], s3: values.s3 });
        process.stdout.write(`${t.token}\n`);
        // Two more lines, in the order the AWS tools ask for them.
        if (t.s3) process.stdout.write(`${t.s3.access_key_id}\n${t.s3.secret_access_key}\n`);
        process.stderr.write(`created token ${t.id} (role ${t.role}${t.user_id ? `, user ${t.user_id}` : ''}); it is shown only once\n`);
      } finally {
        await node.close();
      }
      return 0;
    }
    case 'restore':
      try {
        return await restoreCommand(config(), values.to, values['target-dir'], values.replace === true);
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        process.stderr.write(`strata: restore failed: ${(err as Error).message}\n`);
        return 1;
      }
    case 'backup verify':
      return backupVerifyCommand(config());
    case 'drill':
      return drillCommand(config());
    case 'retention': {
      const cfg = config();
      const dryRun = values['dry-run'] === true;
      // A dry run only reads (SQLite allows that beside a running daemon); applying needs the lock.
      const lock = dryRun ? undefined : DataDirLock.acquire(cfg.storage.data_dir);
      const node = await StrataNode.open(cfg, createLogger('silent'));
      try {
        const report = await node.runRetention(dryRun);
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        process.stderr.write(
          `retention${dryRun ? ' (dry run: nothing removed)' : ''}: ${report.conversations.count} conversations, ` +
            `${report.usage.reduce((s, u) => s + u.events, 0)} usage events, ${report.model_versions.count} model versions\n`,
        );
      } finally {
        await node.close();
        lock?.release();
      }
      return 0;
    }
    case 'keys rotate': {
      const cfg = config();
      const lock = DataDirLock.acquire(cfg.storage.data_dir);
      try {
        return await keysRotateCommand(cfg, values['new-key-file']);
      } finally {
        lock.release();
      }
    }
    case 'promote':
      return promoteCommand(config());
    case '':
      throw new UsageError('a command is required');
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

async function serveCommand(config: StrataConfig): Promise<number> {
  const log = createLogger(config.log.level);
  const lock = DataDirLock.acquire(config.storage.data_dir);
  // Signals are taken from the first moment: a SIGTERM that arrives while the node opens (or
  // just as it starts listening) is a graceful stop once it is up, not the default instant death.
  let requested: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => (requested ??= signal);
  const handler = (signal: NodeJS.Signals) => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  StrataNode.sweepScratch(config.storage.data_dir);
  const node = await StrataNode.open(config, log);
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(node);
    node.startBackgroundJobs();
  } catch (err) {
    await node.close();
    lock.release();
    throw err;
  }
  return new Promise<number>((resolve) => {
    let signals = 0;
    onSignal = (signal: NodeJS.Signals) => {
      if (++signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        lock.release();
        process.exit(1);
      }
      server
        .stop(signal)
        .then(() => {
          // Everything is closed and flushed here, so the process should end by itself. A
          // server left holding a connection past the shutdown timeout (Deno's, whose
          // shutdown() waits for it) would keep it alive and listening for ever, with the
          // data-dir lock already released (review): a second later it is ended.
          setTimeout(() => {
            log.warn('the process did not end by itself after the shutdown; exiting');
            process.exit(process.exitCode ?? 0);
          }, 1000).unref();
          resolve(0);
        })
        .catch((err: unknown) => {
          log.error({ err }, 'shutdown failed');
          resolve(1);
        })
        .finally(() => lock.release());
    };
    if (requested) onSignal(requested);
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`strata: invalid configuration:\n${err.problems.map((p) => `  ${p}`).join('\n')}\n`);
      process.exitCode = 2;
    } else if (err instanceof InvalidInput) {
      process.stderr.write(`strata: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof UsageError) {
      process.stderr.write(`strata: ${err.message}\nRun "strata --help" for usage.\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`strata: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
