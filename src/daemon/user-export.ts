import { Readable } from 'node:stream';
import { Zip, ZipDeflate } from 'fflate';
import type { Actor } from '../engines/sql/writer.js';
import type { StrataNode } from './strata-node.js';

// The export workflow (GDPR art. 15 and 20).

type ExportNode = Pick<StrataNode, 'users' | 'conversations' | 'conversationArchive' | 'sql' | 'usage' | 'billing' | 'feedback'>;

/**
 * Everything held about a user as a zip of JSON files, streamed one file at a time:
 * profile, preferences, conversations (archived ones included), usage, billing, feedback.
 * Pulled, not pushed: the next conversation is read only when the client has taken the
 * bytes of the last one, so a client that stops reading holds one conversation in memory,
 * not the user's whole history.
 */
export async function exportUser(node: ExportNode, actor: Actor, userId: string): Promise<ReadableStream<Uint8Array>> {
  const user = node.users.get(userId);
  await node.conversationArchive.checkUser(userId);
  await node.sql.writer.write(actor, (tx) => tx.audit('users.export', `user:${userId}`));
  async function* zipped(): AsyncIterable<Uint8Array> {
    let ready: Uint8Array[] = [];
    let failure: Error | undefined;
    const zip = new Zip((err, chunk) => {
      if (err) failure = err;
      else ready.push(chunk);
    });
    const add = (name: string, value: unknown) => {
      const file = new ZipDeflate(name, { level: 6 });
      zip.add(file);
      file.push(new TextEncoder().encode(JSON.stringify(value, null, 2)), true);
    };
    const flush = function* () {
      if (failure) throw failure;
      const out = ready;
      ready = [];
      yield* out;
    };
    add('profile.json', user);
    add('preferences.json', await node.users.preferences(userId));
    yield* flush();
    let after: { created_at: string; id: string } | undefined;
    for (;;) {
      const page = node.conversations.list(userId, 100, after);
      for (const c of page) {
        // Page by page into the zip entry: a conversation of a hundred 1 MiB messages is never
        // one string, and a client that stops reading holds one page, not the conversation.
        const file = new ZipDeflate(`conversations/${c.id}.json`, { level: 6 });
        zip.add(file);
        const text = new TextEncoder();
        file.push(text.encode(`${JSON.stringify(c).slice(0, -1)},"messages":[`));
        for (let seq = 0, first = true; ; ) {
          const messages = await node.conversations.messagePage(c.id, { after: seq, limit: 1000 });
          if (messages.json.length > 0) file.push(text.encode((first ? '' : ',') + messages.json.join(',')));
          first = first && messages.json.length === 0;
          seq = messages.first + messages.json.length - 1;
          yield* flush();
          if (!messages.more || messages.json.length === 0) break;
        }
        file.push(text.encode(']}'), true);
        yield* flush();
      }
      if (page.length < 100) break;
      after = { created_at: page[page.length - 1]!.created_at, id: page[page.length - 1]!.id };
    }
    add('usage.json', node.usage.summary(userId, { from: '0000-01-01', to: '9999-12-31', groupBy: 'day' }));
    add('billing.json', node.billing.list({ userId, limit: 1_000_000 }));
    const feedback: { comparisons: unknown[]; ratings: unknown[] } = { comparisons: [], ratings: [] };
    for await (const p of node.feedback.pairs(userId)) feedback.comparisons.push(p);
    for await (const r of node.feedback.ratings(userId)) feedback.ratings.push(r);
    add('feedback.json', feedback);
    zip.end();
    yield* flush();
  }
  return Readable.toWeb(Readable.from(zipped(), { objectMode: false })) as ReadableStream<Uint8Array>;
}
