import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from '../helpers/daemon.js';

// The documentation as the tests see it: every Markdown file a user reads, and its fenced blocks.

export function markdownFiles(): string[] {
  const docs = (readdirSync(join(ROOT, 'docs'), { recursive: true }) as string[]).filter((f) => f.endsWith('.md')).map((f) => join('docs', f));
  return ['README.md', 'CHANGELOG.md', ...docs].sort();
}

export function read(file: string): string {
  return readFileSync(join(ROOT, file), 'utf8');
}

/** The fenced blocks of one language, in order. */
export function blocks(markdown: string, lang: string): string[] {
  const out: string[] = [];
  const fence = /^```(\S*)\n([\s\S]*?)^```$/gm;
  for (const m of markdown.matchAll(fence)) if (m[1] === lang) out.push(m[2]!);
  return out;
}

/** GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to dashes. */
export function anchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[`*]/g, '')
    // GitHub keeps letters, digits, spaces (as dashes), '-' and '_'.
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

export function headings(markdown: string): Set<string> {
  const noCode = markdown.replace(/^```[\s\S]*?^```$/gm, '');
  return new Set([...noCode.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => anchor(m[1]!)));
}

export { relative };
