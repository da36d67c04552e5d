// Worker threads run JavaScript files. Under vitest the engines are loaded from their .ts
// sources, which a worker cannot run, so a worker next to a .ts module is taken from the
// build (dist/) instead; `npm test` builds first.

/** The URL of the built worker `name` (e.g. 'index-worker.js') beside the module at `moduleUrl`. */
export function workerFile(moduleUrl: string, name: string): URL {
  const here = new URL(`./${name}`, moduleUrl);
  if (!moduleUrl.endsWith('.ts')) return here;
  const at = here.pathname.lastIndexOf('/src/');
  return new URL(`${here.pathname.slice(0, at)}/dist${here.pathname.slice(at)}`, here);
}
