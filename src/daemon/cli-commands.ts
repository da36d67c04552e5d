import { ROLES } from '../engines/auth/token-store.js';

// The CLI's commands, for `strata --help`, `strata <command> --help` and the test that runs each.

/** Each command's usage, what it does, and an example: `strata <command> --help` prints one. */
export const COMMANDS: Record<string, { usage: string; does: string; example: string }> = {
  serve: {
    usage: 'strata serve [--config FILE] [--set key.path=value ...]',
    does: 'Runs the daemon: opens the data dir (creating it, and an admin token in admin.token, on first start), serves the HTTP API, and drains in-flight requests on SIGTERM.',
    example: 'strata serve --config /etc/strata/strata.yaml --set server.listen=0.0.0.0:7070',
  },
  'check-config': {
    usage: 'strata check-config [--config FILE] [--set ...]',
    does: 'Validates the configuration and prints the node id, listen address and data dir; exits 2 naming every bad key.',
    example: 'strata check-config --config /etc/strata/strata.yaml',
  },
  'config reference': {
    usage: 'strata config reference',
    does: 'Prints every configuration key with its type, default and meaning (Markdown), generated from the schema the daemon validates with.',
    example: 'strata config reference > configuration-reference.md',
  },
  'token create': {
    usage: `strata token create [--config FILE] [--set ...] --role ROLE [--user-id ID] [--name NAME] [--s3]`,
    does: `Creates an API token and prints it once (with --s3, an S3 access key id and secret on lines 2 and 3). Roles: ${ROLES.join(', ')}; a "user" token is bound to --user-id.`,
    example: 'strata token create --role service --name trainer --s3',
  },
  restore: {
    usage: 'strata restore [--config FILE] [--set ...] --to TIME|latest --target-dir DIR [--replace]',
    does: 'Point-in-time recovery from the backup target into a new data dir: the newest snapshot before TIME, then the change-log segments up to it. --replace makes the copy the node it replaces (it keeps the cluster identity and owns the object tiers); without it the copy is a fork.',
    example: 'strata restore --config /etc/strata/strata.yaml --to 2026-12-01T09:30:00Z --target-dir /var/lib/strata-restored',
  },
  'backup verify': {
    usage: 'strata backup verify [--config FILE] [--set ...]',
    does: 'Reads every snapshot and segment in the backup target and checks their hashes and the change log\'s continuity.',
    example: 'strata backup verify --config /etc/strata/strata.yaml',
  },
  drill: {
    usage: 'strata drill [--config FILE] [--set ...]',
    does: 'Disaster-recovery drill: restores the latest backup into a scratch dir, serves the copy, probes it, and reports.',
    example: 'strata drill --config /etc/strata/strata.yaml',
  },
  promote: {
    usage: 'strata promote [--config FILE] [--set ...]',
    does: 'Makes this replica the primary (manual failover): a new epoch, after which the old primary\'s writes are refused.',
    example: 'strata promote --config /etc/strata/strata.yaml',
  },
  'rollback show': {
    usage: 'strata rollback show FILE [--config FILE] [--set ...]',
    does: 'Prints the records a rejoining node discarded (its divergent tail), from a file in <data_dir>/rollback.',
    example: 'strata rollback show /var/lib/strata/rollback/main-node-a-1796185740064.msgpack',
  },
  'keys rotate': {
    usage: 'strata keys rotate [--config FILE] [--set ...] --new-key-file FILE',
    does: 'Re-wraps every user key under a new master key. The daemon must be stopped.',
    example: 'strata keys rotate --config /etc/strata/strata.yaml --new-key-file /etc/strata/master.key.new',
  },
  retention: {
    usage: 'strata retention [--config FILE] [--set ...] [--dry-run]',
    does: 'Applies the retention rules now (expired conversations, usage events, model versions) and prints what was removed; --dry-run only reports (allowed beside a running daemon).',
    example: 'strata retention --config /etc/strata/strata.yaml --dry-run',
  },
};
