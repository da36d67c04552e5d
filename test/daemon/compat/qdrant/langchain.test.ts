import { Document } from '@langchain/core/documents';
import { Embeddings } from '@langchain/core/embeddings';
import { QdrantVectorStore } from '@langchain/qdrant';
import { QdrantClient } from '@qdrant/js-client-rest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startDaemon, type Daemon } from '../../../helpers/daemon.js';
import { freePort } from '../../../helpers/redis.js';

// LangChain's QdrantVectorStore, unmodified, over Strata's Qdrant API: it checks the
// collection with getCollections, creates it, upserts {content, metadata} payloads with
// wait=true, searches through the Query API with a filter on a metadata key, and deletes.

/** A deterministic bag-of-words embedding: texts sharing words are near. */
class WordEmbeddings extends Embeddings {
  constructor() {
    super({});
  }
  embedQuery(text: string): Promise<number[]> {
    const v = new Array<number>(32).fill(0);
    for (const w of text.toLowerCase().match(/[a-z]+/g) ?? []) {
      let h = 2166136261;
      for (const ch of w) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
      v[(h >>> 0) % 32]! += 1;
    }
    return Promise.resolve(v.map((x) => x + 0.01));
  }
  embedDocuments(texts: string[]): Promise<number[][]> {
    return Promise.all(texts.map((t) => this.embedQuery(t)));
  }
}

let d: Daemon;
let url: string;
let apiKey: string;

beforeAll(async () => {
  const port = await freePort();
  d = await startDaemon({ set: [`qdrant.listen=127.0.0.1:${port}`] });
  url = `http://127.0.0.1:${port}`;
  apiKey = (await api(d, 'POST', '/v1/admin/tokens', { name: 'langchain', role: 'service' })).body.token as string;
});
afterAll(() => d?.stop());

describe('@langchain/qdrant QdrantVectorStore', () => {
  it('adds documents, searches with a metadata filter, deletes by id and by filter', async () => {
    const store = new QdrantVectorStore(new WordEmbeddings(), { url, apiKey, collectionName: 'lc-docs' });
    const docs = [
      new Document({ pageContent: 'the cat sat on the mat', metadata: { source: 'pets', n: 1 } }),
      new Document({ pageContent: 'a cat chased the mouse', metadata: { source: 'pets', n: 2 } }),
      new Document({ pageContent: 'stock markets fell sharply today', metadata: { source: 'news', n: 3 } }),
      new Document({ pageContent: 'the cat and the stock market', metadata: { source: 'news', n: 4 } }),
    ];
    const ids = ['6f0c1a52-2a4e-4b3e-9b49-7a0f0a5c0001', '6f0c1a52-2a4e-4b3e-9b49-7a0f0a5c0002', '6f0c1a52-2a4e-4b3e-9b49-7a0f0a5c0003', '6f0c1a52-2a4e-4b3e-9b49-7a0f0a5c0004'];
    await store.addDocuments(docs, { ids });

    const top = await store.similaritySearch('cat on a mat', 2);
    expect(top[0]!.pageContent).toBe('the cat sat on the mat');
    expect(top[0]!.metadata).toEqual({ source: 'pets', n: 1 });

    const news = await store.similaritySearchWithScore('cat', 4, { must: [{ key: 'metadata.source', match: { value: 'news' } }] });
    expect(news.map(([doc]) => doc.metadata.n)).toEqual([4, 3]);
    expect(news[0]![1]).toBeGreaterThan(news[1]![1]);

    const mmr = await store.maxMarginalRelevanceSearch('cat', { k: 2, fetchK: 4, lambda: 0.5 });
    expect(mmr).toHaveLength(2);

    await store.delete({ ids: [ids[0]!] });
    expect((await store.similaritySearch('cat on a mat', 4)).map((doc) => doc.metadata.n).sort()).toEqual([2, 3, 4]);
    await store.delete({ filter: { must: [{ key: 'metadata.source', match: { value: 'news' } }] } });
    expect((await store.similaritySearch('cat', 4)).map((doc) => doc.metadata.n)).toEqual([2]);

    // The collection LangChain made is an ordinary Strata collection.
    const info = (await new QdrantClient({ url, apiKey }).getCollection('lc-docs')).config.params.vectors;
    expect(info).toEqual({ size: 32, distance: 'Cosine' });
    expect((await api(d, 'GET', '/v1/collections/lc-docs')).body).toMatchObject({ dimensions: 32, metric: 'cos', count: 1 });
  });
});
