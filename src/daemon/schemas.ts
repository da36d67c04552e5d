import { z } from 'zod';

// Schemas that several route files share.

export const id = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/, 'ids are 1-128 characters: letters, digits and . _ : @ - (not first)');
