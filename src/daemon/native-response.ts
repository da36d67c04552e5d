/**
 * The platform's Response, taken before @hono/node-server replaces the global with its
 * lightweight one (which it does when the server starts). Only a platform Response carrying
 * `x-hono-already-sent` is left alone by the adapter; its lightweight one with a null body
 * takes a fast path that writes the head again ("headers already sent"). Used by the handlers
 * that pipe a file straight into the socket (native downloads, S3 GetObject).
 */
export const NativeResponse = globalThis.Response;
