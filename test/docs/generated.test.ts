import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_DOCS } from '../../src/daemon/config-docs.js';
import { configKeys } from '../../src/daemon/config-reference.js';
import { generatedDocs } from '../../src/daemon/docs-build.js';
import { ROOT } from '../helpers/daemon.js';

// The references in docs/ are generated; here they are generated again and compared, so a
// schema, a route or a benchmark result that changed without `npm run docs` fails CI.

describe('generated documentation', () => {
  it('every configuration key has a meaning, and every meaning a key', () => {
    const keys = configKeys().map((k) => k.key);
    expect(keys.filter((k) => !CONFIG_DOCS[k])).toEqual([]);
    expect(Object.keys(CONFIG_DOCS).filter((k) => !keys.includes(k))).toEqual([]);
    expect(keys.length).toBeGreaterThan(100);
  });

  it('is current: npm run docs would change nothing', async () => {
    const stale: string[] = [];
    for (const [path, content] of Object.entries(await generatedDocs())) {
      if (readFileSync(join(ROOT, path), 'utf8') !== content) stale.push(path);
    }
    expect(stale, 'run `npm run docs` and commit the result').toEqual([]);
  }, 60_000);
});

describe('configuration examples', () => {
  it('every yaml block of docs/configuration.md is a valid configuration', async () => {
    const { parseConfig } = await import('../../src/daemon/config.js');
    const { blocks, read } = await import('./markdown.js');
    const examples = blocks(read('docs/configuration.md'), 'yaml');
    expect(examples.length).toBeGreaterThanOrEqual(6);
    const env = Object.fromEntries([...examples.join('\n').matchAll(/\$\{([A-Z0-9_]+)/g)].map((m) => [m[1]!, 'x']));
    for (const text of examples) expect(() => parseConfig(text, { env }), text).not.toThrow();
  });
});
