import { InvalidInput } from '../errors.js';
import type { Migration } from '../sql/migrations.js';

// The model store's tables: models, versions, files and their blobs, aliases, rollouts,
// resumable uploads and their parts, checkpoints. Only the appliers in model-changes.ts (and
// checkpoint-store.ts for its own tables) write them, so that a replica replaying the change
// log ends with the same rows.

export const modelMigrations: Migration[] = [
  {
    engine: 'models',
    version: 1,
    name: 'model registry',
    sql: `
      CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        tier TEXT NOT NULL DEFAULT 'hot',
        key TEXT NOT NULL,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE models (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE model_versions (
        model TEXT NOT NULL REFERENCES models (name),
        version TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'final')),
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        finalized_at TEXT,
        PRIMARY KEY (model, version)
      ) STRICT;
      CREATE TABLE model_files (
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL REFERENCES blobs (sha256),
        created_at TEXT NOT NULL,
        PRIMARY KEY (model, version, path),
        FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
      ) STRICT;
      CREATE INDEX model_files_sha ON model_files (sha256);
      CREATE TABLE model_aliases (
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (model, alias)
      ) STRICT;
      CREATE TABLE model_alias_history (
        seq INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version TEXT NOT NULL,
        previous TEXT,
        token_id TEXT NOT NULL,
        time TEXT NOT NULL
      ) STRICT;
      CREATE TABLE model_rollouts (
        model TEXT PRIMARY KEY,
        variants TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
    `,
  },
];

modelMigrations.push({
  engine: 'models',
  version: 2,
  name: 'resumable upload sessions',
  sql: `
    CREATE TABLE model_uploads (
      id TEXT PRIMARY KEY,
      model TEXT NOT NULL,
      version TEXT NOT NULL,
      path TEXT NOT NULL,
      created_at TEXT NOT NULL
    ) STRICT;
  `,
});

modelMigrations.push({
  engine: 'models',
  version: 3,
  name: 'archived versions',
  sql: `ALTER TABLE model_versions ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;`,
});

modelMigrations.push({
  engine: 'models',
  version: 4,
  name: 'training checkpoints',
  sql: `
    CREATE TABLE checkpoints (
      run TEXT NOT NULL,
      step INTEGER NOT NULL,
      archived INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL,
      PRIMARY KEY (run, step)
    ) STRICT;
    CREATE TABLE checkpoint_files (
      run TEXT NOT NULL,
      step INTEGER NOT NULL,
      path TEXT NOT NULL,
      size INTEGER NOT NULL,
      sha256 TEXT NOT NULL REFERENCES blobs (sha256),
      created_at TEXT NOT NULL,
      PRIMARY KEY (run, step, path),
      FOREIGN KEY (run, step) REFERENCES checkpoints (run, step) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX checkpoint_files_sha ON checkpoint_files (sha256);
  `,
});

modelMigrations.push({
  engine: 'models',
  version: 5,
  name: 'S3 entity tags',
  // The ETag an S3 client saw when it wrote the file: the body's MD5, or md5-of-md5s-N for a
  // multipart upload (it depends on the part boundaries, so it is the file's, not the blob's).
  // NULL for files written through the native API, which computes no MD5.
  sql: `ALTER TABLE model_files ADD COLUMN etag TEXT;`,
});

modelMigrations.push({
  engine: 'models',
  version: 6,
  name: 'S3 entity tags of checkpoint files',
  sql: `ALTER TABLE checkpoint_files ADD COLUMN etag TEXT;`,
});

modelMigrations.push({
  engine: 'models',
  version: 7,
  name: 'resumable upload parts',
  // One row per part stored (the last upload of a part number wins). A part lives in its own
  // object, or in a slot of the upload's assembly file (\`key\` is then that file, \`offset\`
  // where the slot begins): parts of one size written straight into place, so completing
  // the upload renames the file instead of copying every byte again. \`md5\` is the S3 ETag of
  // the part, computed as it arrived (NULL for native parts).
  sql: `
    CREATE TABLE model_upload_parts (
      upload_id TEXT NOT NULL,
      part INTEGER NOT NULL,
      size INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      md5 TEXT,
      key TEXT NOT NULL,
      offset INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL,
      PRIMARY KEY (upload_id, part)
    ) STRICT;
    ALTER TABLE model_uploads ADD COLUMN stripe INTEGER;
  `,
});

modelMigrations.push({
  engine: 'models',
  version: 8,
  name: 'upload sessions for checkpoints and dataset raw files',
  // `model`, `version` and `path` name the destination within its kind: a model's version and
  // file, a checkpoint's run, step and file, or a dataset and one of its raw files.
  sql: `ALTER TABLE model_uploads ADD COLUMN kind TEXT NOT NULL DEFAULT 'model';`,
});

export interface FileEntry {
  path: string;
  size: number;
  sha256: string;
}

export interface RolloutVariant {
  version: string;
  weight: number;
}

export type VersionRow = { model: string; version: string; state: 'open' | 'final'; metadata: string; created_at: string; finalized_at: string | null; archived?: number };

/** Model and version names (the native API's id schema). */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export function checkSha(sha: string | undefined): void {
  if (sha !== undefined && !/^[0-9a-fA-F]{64}$/.test(sha)) throw new InvalidInput('X-Content-Sha256 must be 64 hex characters');
}

/** File paths inside a version: relative, slash-separated, no `..`, no NUL, no backslash. */
export function checkFilePath(path: string): void {
  if (
    path.length === 0 ||
    path.length > 1024 ||
    path.startsWith('/') ||
    /[\0\\]/.test(path) ||
    path.split('/').some((s) => s === '' || s === '.' || s === '..')
  ) {
    throw new InvalidInput(`invalid file path ${JSON.stringify(path)}: use a relative path without "..", "//", NUL or backslashes`);
  }
}
