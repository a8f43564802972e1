/**
 * Loaded models kept warm between requests: at most `max`, the least recently used unloaded first. Values are
 * promises, so concurrent requests for a model still loading share its one load; a failed load is forgotten.
 */
export class WarmCache<T extends { dispose(): Promise<void> }> {
  private entries = new Map<string, Promise<T>>();

  constructor(private readonly max: number) {}

  get(key: string, load: () => Promise<T>): Promise<T> {
    let p = this.entries.get(key);
    if (p) {
      this.entries.delete(key); // re-insert: most recently used last
      this.entries.set(key, p);
      return p;
    }
    p = load();
    this.entries.set(key, p);
    p.catch(() => {
      if (this.entries.get(key) === p) this.entries.delete(key);
    });
    while (this.entries.size > this.max) {
      const [old, q] = this.entries.entries().next().value as [string, Promise<T>];
      this.entries.delete(old);
      void q.then((m) => m.dispose()).catch(() => undefined);
    }
    return p;
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map((p) => p.then((m) => m.dispose()).catch(() => undefined)));
  }
}
