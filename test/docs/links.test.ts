import { existsSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/daemon.js';
import { headings, markdownFiles, read } from './markdown.js';

// Every relative link in the README, the changelog and docs/ points at a file that exists,
// and every #anchor at a heading of that file: moved or renamed docs fail here, not on a user.

describe('documentation links', () => {
  it('resolve to files and headings that exist', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const file of markdownFiles()) {
      const text = read(file).replace(/^```[\s\S]*?^```$/gm, '').replace(/`[^`\n]*`/g, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target)) continue;
        checked++;
        const [path, hash] = target.split('#') as [string, string | undefined];
        const resolved = path ? normalize(join(dirname(file), path)) : file;
        if (!existsSync(join(ROOT, resolved))) {
          broken.push(`${file}: ${target} (no ${resolved})`);
          continue;
        }
        if (hash && resolved.endsWith('.md') && statSync(join(ROOT, resolved)).isFile() && !headings(read(resolved)).has(hash)) broken.push(`${file}: ${target} (no heading #${hash} in ${resolved})`);
      }
    }
    expect(broken).toEqual([]);
    expect(checked).toBeGreaterThan(25);
  });
});
