import type { Logger } from './logger.js';
import type { Role } from '../engines/auth/token-store.js';

/** Who is calling, once the bearer token has been checked. */
export interface Caller {
  tokenId: string;
  role: Role;
  /** Set for `user` tokens: the only user whose data they may touch. */
  userId: string | null;
}

export type AppEnv = {
  Variables: {
    requestId: string;
    log: Logger;
    /** The matched route template, for metrics and logs; set by the route wrapper. */
    route: string;
    caller: Caller | undefined;
  };
};
