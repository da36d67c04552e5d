import { createHash } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { NotFound, StrataError } from '../../../engines/errors.js';
import type { AppEnv } from '../../app-env.js';
import { authorize } from '../../auth.js';
import { errorBody } from '../../http-error.js';
import { serveFile } from '../../routes/models.js';
import type { StrataNode } from '../../strata-node.js';

// A Hugging Face Hub mirror over the model store (issue 17), mounted at /hf so that
// HF_ENDPOINT=http://host:7070/hf (huggingface_hub, transformers) or hubUrl (@huggingface/hub)
// point at it. Only what downloads need: model info by revision, the file tree, and resolve
// (HEAD/GET with ranges). A repo `org/name` is the model named `org--name` (the form the HF
// cache gives its directories); a revision is an alias, a version, or the 40-hex commit id
// derived from a version's manifest; `main` and `HEAD` are the alias `main` when there is one,
// else the newest finalized version (else the newest). Files are all presented as LFS files
// whose oid is their SHA-256. Never an X-Xet-Hash header: it would switch the clients to the
// xet protocol.

const COMMIT = /^[0-9a-f]{40}$/;
const PAGE = 1000;

type Version = { version: string; state: string; created_at: string; finalized_at: string | null };

export function hfMirror(node: StrataNode): Hono<AppEnv> {
  const hf = new Hono<AppEnv>();
  const { models } = node;

  /** The bearer token; the JS client refuses tokens without "hf_", so "hf_<strata token>" is accepted too. */
  hf.use('*', async (c, next) => {
    c.set('route', '/hf/*');
    const header = c.req.header('authorization');
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    const token = m?.[1]?.startsWith('hf_strata_') ? m[1].slice(3) : m?.[1];
    const info = token ? node.tokens.authenticate(token) : undefined;
    if (!info) return c.json({ error: 'Invalid credentials: use a Strata token (optionally prefixed hf_) as the HF token' }, 401, { 'X-Error-Code': 'InvalidCredentials' });
    const caller = { tokenId: info.id, role: info.role, userId: info.user_id };
    try {
      authorize(caller, 'read');
    } catch (err) {
      return c.json({ error: (err as Error).message }, 403);
    }
    c.set('caller', caller);
    return next();
  });

  const repoModel = (org: string, name: string) => `${org}--${name}`;

  /** The model's version for a revision, or a 404 the clients understand. */
  const resolve = (c: Context, model: string, rev: string): { v: Version; commit: string } | Response => {
    let m: ReturnType<typeof models.getModel>;
    try {
      m = models.getModel(model);
    } catch (err) {
      if (err instanceof NotFound) return notFound(c, 'RepoNotFound', `Repository not found: no model ${model}`);
      throw err;
    }
    const versions = m.versions as Version[];
    const byName = (name: string) => versions.find((v) => v.version === name) ?? (m.aliases[name] ? versions.find((v) => v.version === m.aliases[name]) : undefined);
    let v: Version | undefined;
    if (COMMIT.test(rev)) v = versions.find((x) => commitOf(model, x.version) === rev);
    else if (rev === 'main' || rev === 'HEAD') v = byName('main') ?? [...versions].reverse().find((x) => x.state === 'final') ?? versions.at(-1);
    else v = byName(rev);
    if (!v) return notFound(c, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    return { v, commit: commitOf(model, v.version) };
  };

  /** A stable commit id for a version: SHA-1 over its manifest (paths, sizes, SHA-256s). */
  const commitOf = (model: string, version: string) => {
    const h = createHash('sha1').update(`strata\n${model}\n${version}\n`);
    for (const f of models.listFiles(model, version)) h.update(`${f.path}\0${f.size}\0${f.sha256}\n`);
    return h.digest('hex');
  };

  const info = (c: Context, org: string, name: string, rev: string) => {
    c.set('route', '/hf/api/models/:org/:name/revision/:rev');
    const model = repoModel(org, name);
    const r = resolve(c, model, rev);
    if (r instanceof Response) return r;
    const m = models.getModel(model);
    const files = models.listFiles(model, r.v.version);
    return c.json({
      _id: model,
      id: `${org}/${name}`,
      modelId: `${org}/${name}`,
      sha: r.commit,
      lastModified: r.v.finalized_at ?? r.v.created_at,
      createdAt: m.created_at,
      private: false,
      disabled: false,
      gated: false,
      downloads: 0,
      likes: 0,
      tags: m.tags,
      siblings: files.map((f) => ({ rfilename: f.path })),
    });
  };
  hf.get('/api/models/:org/:name', (c) => info(c, c.req.param('org'), c.req.param('name'), 'main'));
  hf.get('/api/models/:org/:name/revision/:rev{.+}', (c) => info(c, c.req.param('org'), c.req.param('name'), decodeURIComponent(c.req.param('rev'))));

  // The tree of a revision (optionally under a path), recursive or one level, paged by Link.
  hf.get('/api/models/:org/:name/tree/:rest{.+}', (c) => {
    c.set('route', '/hf/api/models/:org/:name/tree/:rev');
    const model = repoModel(c.req.param('org'), c.req.param('name'));
    const rest = c.req.param('rest');
    const slash = rest.indexOf('/');
    const rev = decodeURIComponent(slash === -1 ? rest : rest.slice(0, slash));
    const under = slash === -1 ? '' : decodeURIComponent(rest.slice(slash + 1)).replace(/\/+$/, '');
    const r = resolve(c, model, rev);
    if (r instanceof Response) return r;
    const recursive = /^(true|1)$/i.test(c.req.query('recursive') ?? '');
    const prefix = under ? `${under}/` : '';
    const entries: Array<Record<string, unknown>> = [];
    const dirs = new Set<string>();
    for (const f of models.listFiles(model, r.v.version)) {
      if (!f.path.startsWith(prefix)) continue;
      const rel = f.path.slice(prefix.length);
      const parts = rel.split('/');
      // Directories on the way, once each (every level when recursive, the first otherwise).
      for (let i = 1; i < parts.length && (recursive || i === 1); i++) {
        const dir = prefix + parts.slice(0, i).join('/');
        if (!dirs.has(dir)) {
          dirs.add(dir);
          entries.push({ type: 'directory', path: dir, size: 0, oid: createHash('sha1').update(`tree\0${r.commit}\0${dir}`).digest('hex') });
        }
      }
      if (!recursive && parts.length > 1) continue;
      entries.push({ type: 'file', path: f.path, size: f.size, oid: createHash('sha1').update(`blob\0${f.sha256}`).digest('hex'), lfs: { oid: f.sha256, size: f.size, pointerSize: 134 } });
    }
    if (under && entries.length === 0) return notFound(c, 'EntryNotFound', `${under} does not exist at ${rev}`);
    const start = Number(c.req.query('cursor') ?? '0');
    const from = Number.isSafeInteger(start) && start > 0 ? start : 0;
    const asked = Number(c.req.query('limit') ?? PAGE);
    const limit = Number.isSafeInteger(asked) && asked >= 1 ? Math.min(asked, PAGE) : PAGE;
    const page = entries.slice(from, from + limit);
    const headers: Record<string, string> = {};
    if (from + limit < entries.length) {
      const next = new URL(c.req.url);
      next.searchParams.set('cursor', String(from + limit));
      headers.Link = `<${next.toString()}>; rel="next"`;
    }
    return c.json(page, 200, headers);
  });

  // resolve: the file's bytes (GET, with one Range) or its headers (HEAD), with the headers
  // huggingface_hub reads: X-Repo-Commit, X-Linked-Etag, X-Linked-Size.
  hf.on(['GET', 'HEAD'], '/:org/:name/resolve/:rest{.+}', async (c) => {
    c.set('route', '/hf/:org/:name/resolve/:rev/:path');
    const model = repoModel(c.req.param('org'), c.req.param('name'));
    const rest = c.req.param('rest');
    const slash = rest.indexOf('/');
    if (slash === -1) return notFound(c, 'EntryNotFound', 'resolve needs a revision and a path');
    const rev = decodeURIComponent(rest.slice(0, slash));
    const path = decodeURIComponent(rest.slice(slash + 1));
    const r = resolve(c, model, rev);
    if (r instanceof Response) return r;
    let f: ReturnType<typeof models.locateFile>;
    try {
      f = models.locateFile(model, r.v.version, path);
    } catch (err) {
      if (err instanceof StrataError && (err.code === 'not_found' || err.code === 'invalid_input')) return notFound(c, 'EntryNotFound', `${path} does not exist at ${rev}`);
      throw err;
    }
    return serveFile(c as never, node, f, c.req.method === 'HEAD', { 'X-Repo-Commit': r.commit, 'X-Linked-Etag': `"${f.sha256}"`, 'X-Linked-Size': String(f.size) });
  });

  hf.notFound((c) => c.json(errorBody('not_found', `the Hugging Face mirror has no route for ${c.req.method} ${c.req.path}`), 404));
  return hf;
}

/** A 404 in the Hub's form: X-Error-Code says which (the clients branch on it). HEAD gets no body. */
function notFound(c: Context, code: 'RepoNotFound' | 'RevisionNotFound' | 'EntryNotFound', message: string): Response {
  const headers = { 'X-Error-Code': code, 'X-Error-Message': message };
  return c.req.method === 'HEAD' ? c.body(null, 404, headers) : c.json({ error: message }, 404, headers);
}
