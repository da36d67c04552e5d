import { ByteWriter, parquetWrite } from 'hyparquet-writer';
import type { ObjectStore } from '../objects/object-store.js';
import type { Shard } from './dataset-catalog.js';
import type { ShardColumns } from './pipeline-rows.js';

// Output rows gathered into Parquet shards of at most `shardRows` rows (and about 64 MiB of
// text or of input, and 4 M tokens), each encoded (on a pipeline worker when the job has them) and written to the object
// tier as soon as it is full. One shard is encoded and written while the next fills, no more:
// memory holds two shards at most, and a slow tier slows the job instead of queueing shards.
// Columns: id, text, tokens list<int32>, n_tokens, then where each row came from
// (source_file, source_line) and the input row's other fields as JSON.

export interface OutputRow {
  id: string;
  text: string;
  tokens: ArrayLike<number>;
  source_file: string;
  source_line: number;
  /** The input row's other fields (a JSON column). */
  fields: Record<string, unknown> | null;
  /** Bytes of the input line, which bound what `fields` holds. */
  input_bytes?: number;
}

const SHARD_TEXT_BYTES = 64 * 1024 * 1024;
/**
 * Encoding holds every token of a shard as JS numbers several times over (hyparquet's levels
 * and values): 10.9 M tokens ran a worker out of its 512 MiB heap (review), so a shard is cut
 * at 4 M tokens too. `fields` count by their input line's bytes, for the same reason.
 */
const SHARD_TOKENS = 4 * 1024 * 1024;
const SHARD_INPUT_BYTES = 64 * 1024 * 1024;

const SCHEMA = [
  { name: 'root', num_children: 7 },
  { name: 'id', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
  { name: 'text', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
  { name: 'tokens', repetition_type: 'REQUIRED', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', type: 'INT32', repetition_type: 'REQUIRED' },
  { name: 'n_tokens', type: 'INT32', repetition_type: 'REQUIRED' },
  { name: 'source_file', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
  { name: 'source_line', type: 'INT32', repetition_type: 'REQUIRED' },
  { name: 'fields', type: 'BYTE_ARRAY', converted_type: 'JSON', repetition_type: 'OPTIONAL' },
] as const;

/** One shard's bytes. Pure: runs on a pipeline worker. */
export function encodeShard(c: ShardColumns): Uint8Array {
  const tokens: number[][] = [];
  const counts: number[] = [];
  for (let i = 0, from = 0; i < c.ids.length; i++) {
    const to = c.ends[i]!;
    tokens.push(Array.from(c.tokens.subarray(from, to)));
    counts.push(to - from);
    from = to;
  }
  const writer = new ByteWriter();
  parquetWrite({
    writer,
    columnData: [
      // Unique per row: a dictionary would not pay, and trying one costs time.
      { name: 'id', data: c.ids, encoding: 'PLAIN' },
      { name: 'text', data: c.texts, encoding: 'PLAIN' },
      { name: 'tokens', data: tokens, encoding: 'PLAIN' },
      { name: 'n_tokens', data: counts },
      { name: 'source_file', data: c.sourceFiles },
      { name: 'source_line', data: c.sourceLines },
      { name: 'fields', data: c.fields },
    ],
    schema: SCHEMA as unknown as Parameters<typeof parquetWrite>[0]['schema'],
    createdBy: c.createdBy,
  });
  return new Uint8Array(writer.getBuffer());
}

export class ParquetShardWriter {
  private columns = empty();
  private tokens: Array<ArrayLike<number>> = [];
  private tokenCount = 0;
  private textBytes = 0;
  private inputBytes = 0;
  /** The shard being encoded and written, if any. */
  private writing: Promise<void> | undefined;
  readonly shards: Shard[] = [];

  constructor(
    private readonly objects: ObjectStore,
    private readonly prefix: string,
    private readonly shardRows: number,
    private readonly createdBy: string,
    /** Where shards are encoded: a pipeline worker, or in place. */
    private readonly encode: (columns: ShardColumns) => Promise<Uint8Array> = async (c) => encodeShard(c),
  ) {}

  async add(row: OutputRow): Promise<void> {
    const c = this.columns;
    c.ids.push(row.id);
    c.texts.push(row.text);
    c.sourceFiles.push(row.source_file);
    c.sourceLines.push(row.source_line);
    c.fields.push(row.fields);
    this.tokens.push(row.tokens);
    this.tokenCount += row.tokens.length;
    this.textBytes += row.text.length;
    this.inputBytes += row.input_bytes ?? 0;
    if (c.ids.length >= this.shardRows || this.textBytes >= SHARD_TEXT_BYTES || this.tokenCount >= SHARD_TOKENS || this.inputBytes >= SHARD_INPUT_BYTES) await this.cut();
  }

  /** Writes what is left and waits for every shard to be stored. */
  async flush(): Promise<void> {
    if (this.columns.ids.length > 0) await this.cut();
    await this.writing;
  }

  /** A failed job: waits for the shard being written, if any, and writes no more. */
  async abandon(): Promise<void> {
    await this.writing?.catch(() => undefined);
  }

  /** Starts the full shard's write once the one before it is stored. */
  private async cut(): Promise<void> {
    const c = this.columns;
    c.tokens = new Int32Array(this.tokenCount);
    c.ends = new Int32Array(this.tokens.length);
    let at = 0;
    this.tokens.forEach((t, i) => {
      c.tokens.set(t, at);
      at += t.length;
      c.ends[i] = at;
    });
    this.columns = empty();
    this.tokens = [];
    this.tokenCount = 0;
    this.textBytes = 0;
    this.inputBytes = 0;
    await this.writing;
    const name = `shard-${String(this.shards.length).padStart(5, '0')}.parquet`;
    const path = `${this.prefix}/${name}`;
    const rows = c.ids.length;
    this.writing = (async () => {
      const bytes = await this.encode({ ...c, createdBy: this.createdBy });
      await this.objects.put(path, (async function* () {
        yield bytes;
      })());
      this.shards.push({ name, path, rows, bytes: bytes.length });
    })();
    // Awaited by the next cut or by flush; a job that fails before then must not see it as unhandled.
    this.writing.catch(() => undefined);
  }
}

function empty(): ShardColumns {
  return { ids: [], texts: [], tokens: new Int32Array(0), ends: new Int32Array(0), sourceFiles: [], sourceLines: [], fields: [], createdBy: '' };
}
