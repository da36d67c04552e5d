import { readFileSync } from 'node:fs';

// Read once from package.json, which sits two levels above both src/daemon and dist/src/daemon's parent.
function readVersion(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'strata' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0-unknown';
}

export const VERSION = readVersion();

export function runtimeName(): 'bun' | 'deno' | 'node' {
  const versions = process.versions as Record<string, string | undefined>;
  if (versions.bun) return 'bun';
  if (versions.deno) return 'deno';
  return 'node';
}
