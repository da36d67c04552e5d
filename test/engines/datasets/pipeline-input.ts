// A deterministic input for the pipeline's output tests: ordinary rows with exact and near
// duplicates (near ones both close by and far back, so a spilled duplicate finder must look
// on disk), Unicode that NFKC changes, PII, rows each filter drops, long rows, runs the
// tokenizer cuts, and every kind of malformed line. The expected shard bytes were recorded
// from 0.12.0, whose pipeline ran every row on the event loop, one at a time.

const WORDS = 'storage engine replica primary write ahead log snapshot segment shard token model weights checkpoint cache vector index query latency throughput memory disk network quota billing user conversation message archive backup restore verify promote fence epoch lease'.split(' ');

export function pipelineInput(rows: number): string {
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const pick = () => WORDS[Math.floor(rand() * WORDS.length)]!;
  const kept: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < rows; i++) {
    const r = rand();
    let line: string;
    const earlier = kept.length ? kept[Math.floor(rand() * kept.length)]! : 'first';
    if (r < 0.04) line = JSON.stringify({ text: `  ${earlier.toUpperCase()} ` });
    else if (r < 0.07) line = JSON.stringify({ text: earlier.replace(/\w+\s*$/, 'changed') });
    else if (r < 0.08) line = JSON.stringify({ text: `Ｆｕｌｌ ｗｉｄｔｈ ﬁle ${pick()} ${i} ${Array.from({ length: 30 }, pick).join('\u00a0')}` });
    else if (r < 0.09) line = JSON.stringify({ text: `mail ${pick()}.${i}@example.com or call 415-555-01${String(i % 100).padStart(2, '0')} about the ${Array.from({ length: 20 }, pick).join(' ')}` });
    else if (r < 0.1) line = JSON.stringify({ text: `$$$ %%% ^^^ ${i} &&& *** ((( )))` });
    else if (r < 0.105) line = JSON.stringify({ text: 'hi' });
    else if (r < 0.11) line = JSON.stringify({ text: Array.from({ length: 4 }, () => 'the same line again').join('\n') + `\n${i}` });
    else if (r < 0.113) line = JSON.stringify({ id: `long-${i}`, text: Array.from({ length: 3000 }, pick).join(' ') + ` ${i}` });
    else if (r < 0.115) line = JSON.stringify({ text: `dna ${'ACGT'.repeat(200 + i % 50)} end ${i}` });
    else if (r < 0.12) line = ['not json {', '[1,2]', '{"nottext":1}', JSON.stringify({ text: 'deep', f: JSON.parse('['.repeat(70) + ']'.repeat(70)) }), ''][i % 5]!;
    else if (r < 0.125) line = JSON.stringify({ id: i, text: `numbered ${Array.from({ length: 12 }, pick).join(' ')}`, source: 'web', meta: { n: i, tags: ['a', 'b'] } });
    else {
      const text = Array.from({ length: 20 + Math.floor(rand() * 120) }, pick).join(' ') + ` ${i}.`;
      kept.push(text);
      line = JSON.stringify({ text });
    }
    lines.push(i % 97 === 0 ? `${line}\r` : line);
  }
  return lines.join('\n') + '\n' + 'z'.repeat(300_000) + '\nno final newline';
}

/** Step plans the tests run, each with its recorded output. */
export const PLANS = {
  all: { steps: ['normalize', 'dedup', 'filter', 'redact_pii', 'tokenize'], dedup_threshold: 0.8 },
  dedup_last: { steps: ['filter', 'tokenize', 'dedup'], dedup_threshold: 0.7 },
  exact_only: { steps: ['dedup', 'redact_pii', 'normalize'], dedup_threshold: null },
} as const;
