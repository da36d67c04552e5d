import { ByteWriter, parquetWrite } from 'hyparquet-writer';
import type { ObjectStore } from '../objects/object-store.js';
import type { Shard } from './dataset-catalog.js';

// Output rows gathered into Parquet shards of at most `shardRows` rows (and about 64 MiB of
// text), each written to the object tier as soon as it is full, so memory holds one shard.
// Columns: id, text, tokens list<int32>, n_tokens, then where each row came from
// (source_file, source_line) and the input row's other fields as JSON.

export interface OutputRow {
  id: string;
  text: string;
  tokens: number[];
  source_file: string;
  source_line: number;
  /** The input row's other fields (a JSON column). */
  fields: Record<string, unknown> | null;
}

const SHARD_TEXT_BYTES = 64 * 1024 * 1024;

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

export class ParquetShardWriter {
  private rows: OutputRow[] = [];
  private textBytes = 0;
  readonly shards: Shard[] = [];

  constructor(
    private readonly objects: ObjectStore,
    private readonly prefix: string,
    private readonly shardRows: number,
    private readonly createdBy: string,
  ) {}

  async add(row: OutputRow): Promise<void> {
    this.rows.push(row);
    this.textBytes += row.text.length;
    if (this.rows.length >= this.shardRows || this.textBytes >= SHARD_TEXT_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.rows.length === 0) return;
    const rows = this.rows;
    this.rows = [];
    this.textBytes = 0;
    const writer = new ByteWriter();
    parquetWrite({
      writer,
      columnData: [
        // Unique per row: a dictionary would not pay, and trying one costs time.
        { name: 'id', data: rows.map((r) => r.id), encoding: 'PLAIN' },
        { name: 'text', data: rows.map((r) => r.text), encoding: 'PLAIN' },
        { name: 'tokens', data: rows.map((r) => r.tokens), encoding: 'PLAIN' },
        { name: 'n_tokens', data: rows.map((r) => r.tokens.length) },
        { name: 'source_file', data: rows.map((r) => r.source_file) },
        { name: 'source_line', data: rows.map((r) => r.source_line) },
        { name: 'fields', data: rows.map((r) => r.fields) },
      ],
      schema: SCHEMA as unknown as Parameters<typeof parquetWrite>[0]['schema'],
      createdBy: this.createdBy,
    });
    const bytes = new Uint8Array(writer.getBuffer());
    const name = `shard-${String(this.shards.length).padStart(5, '0')}.parquet`;
    const path = `${this.prefix}/${name}`;
    await this.objects.put(path, (async function* () {
      yield bytes;
    })());
    this.shards.push({ name, path, rows: rows.length, bytes: bytes.length });
  }
}
