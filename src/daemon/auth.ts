import type { Context } from 'hono';
import type { TokenStore } from '../engines/auth/token-store.js';
import { Forbidden, NotFound, Unauthorized } from '../engines/errors.js';
import type { Actor } from '../engines/sql/writer.js';
import type { Caller } from './app-env.js';

/**
 * What a route requires of its caller:
 * - `public`: no token (operations endpoints);
 * - `admin`: admin tokens only;
 * - `service`: admin or service — trusted backends acting for any user;
 * - `write`: any role that may change data (everything but reader); user tokens are then
 *   held to their own user by guardUser();
 * - `read`: any valid token; user tokens are held to their own user by guardUser();
 * - `shared`: reads of data that belongs to no single user (vector collections, the graph):
 *   admin, service and reader, not user tokens, since such data may mix tenants.
 */
export type Access = 'public' | 'admin' | 'service' | 'write' | 'read' | 'shared';

const ALLOWED: Record<Exclude<Access, 'public'>, ReadonlySet<Caller['role']>> = {
  admin: new Set(['admin']),
  service: new Set(['admin', 'service']),
  write: new Set(['admin', 'service', 'user']),
  read: new Set(['admin', 'service', 'reader', 'user']),
  shared: new Set(['admin', 'service', 'reader']),
};

export function authenticate(c: Context, tokens: TokenStore): Caller {
  const header = c.req.header('authorization');
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!match) throw new Unauthorized('an Authorization: Bearer <token> header is required');
  const info = tokens.authenticate(match[1]!);
  if (!info) throw new Unauthorized('the bearer token is unknown or has been revoked');
  return { tokenId: info.id, role: info.role, userId: info.user_id };
}

export function authorize(caller: Caller, access: Exclude<Access, 'public'>): void {
  if (!ALLOWED[access].has(caller.role)) {
    throw new Forbidden(`a ${caller.role} token cannot do this; it needs ${describe(access)}`);
  }
}

/**
 * The tenant-isolation guard every user-scoped route calls before touching data. A `user`
 * token asking for another user's resource gets the same 404 as for a resource that does
 * not exist, so it cannot learn which ids exist.
 */
export function guardUser(caller: Caller, userId: string, what = `user ${userId}`): void {
  if (caller.role === 'user' && caller.userId !== userId) throw new NotFound(`${what} does not exist`);
}

export function actorOf(caller: Caller): Actor {
  return { tokenId: caller.tokenId };
}

function describe(access: Exclude<Access, 'public'>): string {
  return [...ALLOWED[access]].map((r) => `${r}`).join(' or ') + ' role';
}
