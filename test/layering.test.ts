/**
 * The shape of src/: no import circles between files, and no arrow from a lower layer to a higher one
 * (cli → tasks → vision/learn → engine → models → image/data → util; server, queue and api sit with tasks, under
 * cli). Circles crept in before (cli/options ↔ cli/commands/models, models/download ↔ models/store,
 * engine/grad/forward ↔ bn-train, learn/finetune ↔ finetune-session); this keeps them out.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { test } from 'node:test';

const SRC = join(import.meta.dirname, '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

// Static imports and re-exports (`import x from`, `import type`, `export * from`, side-effect `import './x.js'`),
// dynamic imports and type references (`import('./x.js')`): every way one file can lean on another.
const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\sfrom\s*)?['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** The import graph of src/: file (relative to src, '/'-separated) → the src files it imports. */
export function importGraph(files: string[] = sourceFiles(SRC)): Map<string, string[]> {
  const rel = (p: string) => relative(SRC, p).split(sep).join('/');
  const known = new Set(files.map(rel));
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    const deps = new Set<string>();
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = (m[1] ?? m[2])!;
      const target = rel(join(dirname(f), spec)).replace(/\.js$/, '.ts');
      const file = known.has(target) ? target : known.has(`${target}.ts`) ? `${target}.ts` : known.has(`${target}/index.ts`) ? `${target}/index.ts` : undefined;
      assert.ok(file, `${rel(f)} imports '${spec}', which is no file in src/ (the test's pattern missed it?)`);
      deps.add(file);
    }
    graph.set(rel(f), [...deps]);
  }
  return graph;
}

/** One cycle through each strongly connected component of more than one file (or a file importing itself). */
export function findCycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const c: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      if (c.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(c);
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  // Name a concrete circle in each component (a shortest path back to its first file), for the failure message.
  return components.map((c) => {
    const inC = new Set(c);
    const start = c.sort()[0]!;
    const prev = new Map<string, string>();
    const queue = [start];
    while (queue.length) {
      const v = queue.shift()!;
      for (const w of graph.get(v) ?? []) {
        if (!inC.has(w)) continue;
        if (w === start) {
          const path = [v];
          while (path[0] !== start) path.unshift(prev.get(path[0]!)!);
          return [...path, start];
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    return c;
  });
}

/** Layer of a src file: higher may import lower, never the reverse. */
// onnx/ (graph walking and cutting) and models/ (ONNX files, catalog, importers) use each other's pieces: one layer.
const LAYERS: Record<string, number> = { util: 0, image: 1, data: 1, models: 2, onnx: 2, engine: 3, vision: 4, learn: 4, tasks: 5, server: 5, queue: 5, api: 5, cli: 6 };
// Top-level files: errors.ts is imported by every layer; index.ts and advanced.ts are the public entries above all.
const TOP_FILES: Record<string, number> = { 'errors.ts': -1, 'index.ts': 7, 'advanced.ts': 7 };

function layerOf(file: string): number {
  const first = file.split('/')[0]!;
  const layer = file.includes('/') ? LAYERS[first] : TOP_FILES[first];
  assert.ok(layer !== undefined, `src/${file}: no layer for it in test/layering.test.ts (add its folder to LAYERS)`);
  return layer;
}

test('the cycle finder finds a circle and names it', () => {
  const g = new Map([
    ['a.ts', ['b.ts']],
    ['b.ts', ['c.ts']],
    ['c.ts', ['a.ts', 'd.ts']],
    ['d.ts', []],
  ]);
  assert.deepEqual(findCycles(g), [['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
  assert.deepEqual(findCycles(new Map([['a.ts', ['b.ts']], ['b.ts', []]])), []);
});

test('src/ has no import circle', () => {
  const graph = importGraph();
  assert.ok(graph.size > 100, `read ${graph.size} files`);
  assert.ok((graph.get('cli/commands/models.ts') ?? []).includes('cli/options.ts'), 'the parser sees imports');
  const cycles = findCycles(graph);
  assert.deepEqual(cycles.map((c) => c.join(' → ')), [], 'move the piece both files need to a lower module');
});

test('no import goes up a layer (cli → tasks → vision/learn → engine → models → image/data → util)', () => {
  const up: string[] = [];
  for (const [file, deps] of importGraph()) {
    for (const d of deps) if (layerOf(d) > layerOf(file)) up.push(`${file} → ${d}`);
  }
  assert.deepEqual(up, []);
});
