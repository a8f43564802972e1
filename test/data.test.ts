import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GraftError, UsageError } from '../src/errors.js';
import {
  datasetFromFiles,
  type DatasetItem,
  detectLayout,
  findImages,
  openDataset,
  stratifiedSplit,
} from '../src/data/index.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'graft-data-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

let n = 0;
/** A fresh folder under the temp dir holding `files` (relative path → content; '' makes a 0-byte file). */
async function tree(files: Record<string, string>): Promise<string> {
  const root = join(tmp, `t${n++}`);
  await mkdir(root, { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const p = join(root, rel);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, content);
  }
  return root;
}

const X = 'not really an image';

/** Class name of each item, by path relative to `root`. */
function labelsByPath(ds: { root: string; classes: string[]; items: DatasetItem[] }): Record<string, string> {
  return Object.fromEntries(ds.items.map((it) => [it.path.slice(ds.root.length + 1), ds.classes[it.label]]));
}

async function rejectsGraft(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof GraftError, `expected a GraftError, got ${String(err)}`);
    assert.match(err.message, re);
    return true;
  });
}

describe('findImages', () => {
  test('recursive, case-insensitive extensions, hidden and junk ignored, empty files skipped, byte-sorted', async () => {
    const root = await tree({
      'b.JPG': X,
      'a.Jpeg': X,
      'c.png': X,
      'Z.webp': X,
      'sub/deeper/d.tiff': X,
      'sub/e.GIF': X,
      'sub/f.avif': X,
      'sub/g.TIF': X,
      '.hidden.jpg': X,
      '.git/h.jpg': X,
      'sub/.cache/i.jpg': X,
      'Thumbs.db': X,
      'sub/thumbs.db': X,
      'desktop.ini': X,
      'empty.jpg': '',
      'notes.txt': X,
      'noext': X,
    });
    const { files, skipped } = await findImages(root);
    const rel = files.map((f) => f.slice(root.length + 1));
    assert.deepEqual(rel, [
      'Z.webp',
      'a.Jpeg',
      'b.JPG',
      'c.png',
      'sub/deeper/d.tiff',
      'sub/e.GIF',
      'sub/f.avif',
      'sub/g.TIF',
    ]);
    assert.ok(files.every((f) => f.startsWith('/')), 'files.every((f) => f.startsWith(\'/\'))');
    assert.deepEqual(
      skipped.map((s) => [s.path.slice(root.length + 1), s.reason]),
      [
        ['empty.jpg', 'empty file (0 bytes)'],
        ['noext', 'not an image file type (no extension)'],
        ['notes.txt', 'not an image file type (.txt)'],
      ],
    );
  });

  test('symlinks are followed, loops are reported and not followed, a file reached twice is listed once', async () => {
    const root = await tree({ 'a/x.jpg': X, 'a/b/y.jpg': X, 'other/z.jpg': X });
    await symlink(root, join(root, 'a', 'b', 'loop')); // back to the top
    await symlink(join(root, 'other'), join(root, 'a', 'link-to-other'));
    await symlink(join(root, 'other', 'z.jpg'), join(root, 'a', 'file-link.jpg'));
    await symlink(join(root, 'missing.jpg'), join(root, 'a', 'broken.jpg'));
    const { files, skipped } = await findImages(join(root, 'a'));
    // The loop up to the top used to be walked, listing other/z.jpg through it, and again as a/file-link.jpg.
    assert.deepEqual(
      files.map((f) => f.slice(root.length + 1)),
      ['a/b/y.jpg', 'a/link-to-other/z.jpg', 'a/x.jpg'],
    );
    assert.deepEqual(
      skipped.map((s) => [s.path.slice(root.length + 1), s.reason]),
      [
        ['a/b/loop', 'symbolic link to a folder that holds it (a loop); not followed'],
        ['a/broken.jpg', 'broken symbolic link'],
        // A file wins over a link to it: z.jpg as its folder's entry, not as the link file-link.jpg.
        ['a/file-link.jpg', `the same file as ${join(root, 'a', 'link-to-other', 'z.jpg')} (listed once)`],
      ],
    );
  });
});

describe('folder layout', () => {
  test('one class per sub-folder, sorted; nested images; loose files skipped', async () => {
    const root = await tree({
      'dogs/a.jpg': X,
      'dogs/puppies/b.JPG': X,
      'cats/x.png': X,
      'cats/2020/summer/y.jpeg': X,
      'cats/z.jpg': '',
      'cats/Thumbs.db': X,
      'birds/.DS_Store': X,
      'birds/tit.webp': X,
      'loose.jpg': X,
      'README.md': X,
      '.hidden/q.jpg': X,
    });
    assert.equal(await detectLayout(root), 'folder');
    const ds = await openDataset(root);
    assert.equal(ds.layout, 'folder');
    assert.equal(ds.root, root);
    assert.deepEqual(ds.classes, ['birds', 'cats', 'dogs']);
    assert.deepEqual(labelsByPath(ds), {
      'birds/tit.webp': 'birds',
      'cats/2020/summer/y.jpeg': 'cats',
      'cats/x.png': 'cats',
      'dogs/a.jpg': 'dogs',
      'dogs/puppies/b.JPG': 'dogs',
    });
    assert.deepEqual(
      ds.items.map((i) => i.path),
      [...ds.items.map((i) => i.path)].sort(),
    );
    assert.deepEqual(
      ds.skipped.map((s) => [s.path.slice(root.length + 1), s.reason]),
      [
        ['README.md', 'not inside a class folder'],
        ['cats/z.jpg', 'empty file (0 bytes)'],
        ['loose.jpg', 'not inside a class folder'],
      ],
    );
  });

  test('an empty class folder is an error naming it', async () => {
    const root = await tree({ 'cats/a.jpg': X, 'dogs/notes.txt': X, 'dogs/zero.jpg': '' });
    await rejectsGraft(openDataset(root), /class folder 'dogs' in .*t\d+ has no images/);
    const root2 = await tree({ 'cats/a.jpg': X });
    await mkdir(join(root2, 'dogs'));
    await rejectsGraft(openDataset(root2), /class folder 'dogs' in .* has no images/);
  });

  test('fewer than 2 classes is an error naming the root and what was found', async () => {
    const one = await tree({ 'cats/a.jpg': X, 'b.jpg': X });
    await rejectsGraft(openDataset(one), new RegExp(`${one}.*only 1 sub-folder \\('cats'\\) and 1 image file`));
    const none = await tree({ 'a.jpg': X, 'b.png': X });
    await rejectsGraft(openDataset(none), new RegExp(`${none}.*no sub-folders and 2 image file`));
  });

  test('missing root, or a file as root', async () => {
    const missing = join(tmp, 'does-not-exist');
    await rejectsGraft(openDataset(missing), new RegExp(`dataset folder not found: ${missing}`));
    const file = join(await tree({ 'f.jpg': X }), 'f.jpg');
    await rejectsGraft(openDataset(file), new RegExp(`dataset folder not found: ${file}`));
  });

  test('a folder of splits (train/, validation/ with class folders) is refused with a hint', async () => {
    const root = await tree({ 'train/cats/a.jpg': X, 'train/dogs/b.jpg': X, 'validation/cats/c.jpg': X, 'validation/dogs/d.jpg': X });
    await rejectsGraft(openDataset(root), /folder of splits .*open one split, e\.g\. .*train/);
    assert.equal((await openDataset(join(root, 'train'))).items.length, 2);
  });

  test('forced classes: their order is used, unknown classes are an error, missing ones are fine', async () => {
    const root = await tree({ 'cats/a.jpg': X, 'dogs/b.jpg': X });
    const ds = await openDataset(root, { classes: ['dogs', 'cats', 'birds'] });
    assert.deepEqual(ds.classes, ['dogs', 'cats', 'birds']);
    assert.deepEqual(labelsByPath(ds), { 'cats/a.jpg': 'cats', 'dogs/b.jpg': 'dogs' });
    assert.deepEqual(ds.items.map((i) => i.label), [1, 0]);
    await rejectsGraft(openDataset(root, { classes: ['cats', 'horses'] }), /not in the given class list: 'dogs'/);
    // one class folder is enough when the classes are given (evaluating on part of the classes)
    const onlyCats = await tree({ 'cats/a.jpg': X });
    assert.deepEqual((await openDataset(onlyCats, { classes: ['cats', 'dogs'] })).items, [
      { path: join(onlyCats, 'cats/a.jpg'), label: 0 },
    ]);
  });

  test('label option outside oxford-pets is a usage error', async () => {
    const root = await tree({ 'cats/a.jpg': X, 'dogs/b.jpg': X });
    await assert.rejects(openDataset(root, { label: 'species' }), UsageError);
  });
});

describe('oxford-pets layout', () => {
  const petFiles = {
    'images/Abyssinian_1.jpg': X,
    'images/Abyssinian_34.jpg': X,
    'images/great_pyrenees_173.jpg': X,
    'images/american_bulldog_10.jpg': X,
    'images/Bengal_2.JPG': X,
    'images/beagle_7.jpg': X,
    'images/empty_1.jpg': '',
    'quirks/Abyssinian_5.jpg': X,
  };

  test('labels from file names; classes case-insensitively sorted; quirks/ not included', async () => {
    const root = await tree(petFiles);
    assert.equal(await detectLayout(root), 'oxford-pets');
    const ds = await openDataset(root);
    assert.equal(ds.layout, 'oxford-pets');
    assert.deepEqual(ds.classes, ['Abyssinian', 'american_bulldog', 'beagle', 'Bengal', 'great_pyrenees']);
    assert.deepEqual(labelsByPath(ds), {
      'images/Abyssinian_1.jpg': 'Abyssinian',
      'images/Abyssinian_34.jpg': 'Abyssinian',
      'images/Bengal_2.JPG': 'Bengal',
      'images/american_bulldog_10.jpg': 'american_bulldog',
      'images/beagle_7.jpg': 'beagle',
      'images/great_pyrenees_173.jpg': 'great_pyrenees',
    });
    assert.deepEqual(ds.skipped.map((s) => s.reason), ['empty file (0 bytes)']);
  });

  test('species: capitalised breed = cat', async () => {
    const root = await tree(petFiles);
    const ds = await openDataset(root, { label: 'species' });
    assert.deepEqual(ds.classes, ['cat', 'dog']);
    assert.deepEqual(labelsByPath(ds), {
      'images/Abyssinian_1.jpg': 'cat',
      'images/Abyssinian_34.jpg': 'cat',
      'images/Bengal_2.JPG': 'cat',
      'images/american_bulldog_10.jpg': 'dog',
      'images/beagle_7.jpg': 'dog',
      'images/great_pyrenees_173.jpg': 'dog',
    });
  });

  const list = [
    '#Image CLASS-ID SPECIES BREED ID',
    '#ID: 1:37 Class ids',
    'Abyssinian_1 1 1 1',
    'Abyssinian_2 1 1 1',
    'beagle_7 3 2 2',
    'beagle_8 3 2 2',
    'american_bulldog_10 2 2 1',
    // the list says this "Abyssinian" file is a beagle (a dog): the list wins
    'Abyssinian_34 3 2 2',
    // and this oddly named file is an Abyssinian
    'IMG0001 1 1 1',
    '',
  ].join('\n');

  test('annotations/list.txt wins over the file name; unlisted files fall back to their names', async () => {
    const root = await tree({
      ...petFiles,
      'annotations/list.txt': list,
      'images/IMG0001.jpg': X,
      'images/holiday.jpg': X,
    });
    assert.equal(await detectLayout(root), 'oxford-pets');
    const ds = await openDataset(root);
    assert.deepEqual(labelsByPath(ds), {
      'images/Abyssinian_1.jpg': 'Abyssinian',
      'images/Abyssinian_34.jpg': 'beagle',
      'images/Bengal_2.JPG': 'Bengal', // not listed: from its name
      'images/IMG0001.jpg': 'Abyssinian',
      'images/american_bulldog_10.jpg': 'american_bulldog',
      'images/beagle_7.jpg': 'beagle',
      'images/great_pyrenees_173.jpg': 'great_pyrenees',
    });
    assert.deepEqual(
      ds.skipped.map((s) => [s.path.slice(root.length + 1), s.reason]),
      [
        ['images/empty_1.jpg', 'empty file (0 bytes)'],
        ['images/holiday.jpg', 'name is not <breed>_<number> and the file is not in annotations/list.txt'],
      ],
    );
    const species = await openDataset(root, { label: 'species' });
    assert.equal(labelsByPath(species)['images/Abyssinian_34.jpg'], 'dog');
    assert.equal(labelsByPath(species)['images/IMG0001.jpg'], 'cat');
  });

  test('pointing at images/ itself works, with or without the annotations beside it', async () => {
    const root = await tree({ ...petFiles, 'annotations/list.txt': list });
    const images = join(root, 'images');
    assert.equal(await detectLayout(images), 'oxford-pets');
    const ds = await openDataset(images);
    assert.equal(ds.layout, 'oxford-pets');
    assert.equal(labelsByPath(ds)['Abyssinian_34.jpg'], 'beagle');
    const bare = await tree({ 'images/Abyssinian_1.jpg': X, 'images/beagle_2.jpg': X, 'images/beagle_3.jpg': X });
    assert.equal(await detectLayout(join(bare, 'images')), 'oxford-pets');
    assert.deepEqual((await openDataset(join(bare, 'images'))).classes, ['Abyssinian', 'beagle']);
    // a folder of loose photos named like IMG_0001.jpg is not mistaken for Oxford Pets...
    const photos = await tree({ 'IMG_0001.jpg': X, 'DSC_0002.jpg': X });
    assert.equal(await detectLayout(photos), 'folder');
    // ...but can be opened as such on request
    assert.deepEqual((await openDataset(photos, { layout: 'oxford-pets' })).classes, ['DSC', 'IMG']);
  });

  test('a malformed list.txt line is an error with its line number', async () => {
    const root = await tree({ ...petFiles, 'annotations/list.txt': '# header\nAbyssinian_1 one 1 1\n' });
    await rejectsGraft(openDataset(root), /list\.txt line 2: expected/);
  });
});

describe('petimages layout', () => {
  test('Cat/ and Dog/ with junk, empty and corrupt files; also under PetImages/', async () => {
    const files = {
      'Cat/0.jpg': X,
      'Cat/1.jpg': 'corrupt bytes',
      'Cat/666.jpg': '',
      'Cat/Thumbs.db': X,
      'Dog/0.jpg': X,
      'Dog/11702.jpg': '',
      'Dog/Thumbs.db': X,
    };
    const root = await tree(files);
    assert.equal(await detectLayout(root), 'petimages');
    const ds = await openDataset(root);
    assert.equal(ds.layout, 'petimages');
    assert.deepEqual(ds.classes, ['cat', 'dog']);
    assert.deepEqual(labelsByPath(ds), { 'Cat/0.jpg': 'cat', 'Cat/1.jpg': 'cat', 'Dog/0.jpg': 'dog' });
    assert.deepEqual(
      ds.skipped.map((s) => [s.path.slice(root.length + 1), s.reason]),
      [
        ['Cat/666.jpg', 'empty file (0 bytes)'],
        ['Dog/11702.jpg', 'empty file (0 bytes)'],
      ],
    );

    const outer = await tree({
      'readme[1].txt': X,
      'MSR-LA - 3467.docx': X,
      ...Object.fromEntries(Object.entries(files).map(([k, v]) => [`PetImages/${k}`, v])),
    });
    assert.equal(await detectLayout(outer), 'petimages');
    const ds2 = await openDataset(outer);
    assert.equal(ds2.items.length, 3);
    assert.deepEqual(ds2.classes, ['cat', 'dog']);
  });

  test('cats/ and dogs/ (lower case, plural) are a plain folder layout', async () => {
    const root = await tree({ 'cats/a.jpg': X, 'dogs/b.jpg': X });
    assert.equal(await detectLayout(root), 'folder');
  });
});

describe('datasetFromFiles', () => {
  test('files in the given order, folders expanded, missing and empty files skipped, duplicates once', async () => {
    const root = await tree({ 'z.jpg': X, 'dir/b.png': X, 'dir/a.JPG': X, 'dir/notes.txt': X, 'dir/e.jpg': '', 'odd.bin': X });
    const res = await datasetFromFiles([
      join(root, 'z.jpg'),
      join(root, 'dir'),
      join(root, 'missing.jpg'),
      join(root, 'odd.bin'),
      join(root, 'z.jpg'),
    ]);
    assert.deepEqual(
      res.items.map((i) => i.path.slice(root.length + 1)),
      ['z.jpg', 'dir/a.JPG', 'dir/b.png', 'odd.bin'],
    );
    assert.deepEqual(
      res.skipped.map((s) => [s.path.slice(root.length + 1), s.reason]),
      [
        ['dir/e.jpg', 'empty file (0 bytes)'],
        ['dir/notes.txt', 'not an image file type (.txt)'],
        ['missing.jpg', 'file not found'],
      ],
    );
  });
});

describe('stratifiedSplit', () => {
  // 3 classes of 100, 30 and 2 items, plus a class with a single item, interleaved
  const items: DatasetItem[] = [];
  for (let i = 0; i < 100; i++) items.push({ path: `a${i}`, label: 0 });
  for (let i = 0; i < 30; i++) items.splice(i * 3 + 1, 0, { path: `b${i}`, label: 1 });
  items.push({ path: 'c0', label: 2 }, { path: 'c1', label: 2 }, { path: 'd0', label: 3 });

  const count = (xs: DatasetItem[], label: number) => xs.filter((x) => x.label === label).length;

  test('class proportions, no overlap, union is everything, order kept', () => {
    const { train, val } = stratifiedSplit(items, 0.2, 42);
    assert.equal(count(val, 0), 20);
    assert.equal(count(val, 1), 6);
    assert.equal(count(val, 2), 1);
    assert.equal(count(train, 2), 1);
    assert.equal(count(val, 3), 0);
    assert.equal(count(train, 3), 1);
    const t = new Set(train);
    assert.ok(val.every((v) => !t.has(v)), 'val.every((v) => !t.has(v))');
    assert.equal(train.length + val.length, items.length);
    assert.deepEqual(new Set([...train, ...val]), new Set(items));
    const pos = new Map(items.map((it, i) => [it, i]));
    for (const side of [train, val]) {
      for (let i = 1; i < side.length; i++) assert.ok(pos.get(side[i - 1])! < pos.get(side[i])!, 'pos.get(side[i - 1])! < pos.get(side[i])!');
    }
  });

  test('every class with 2+ items has one on each side, even with tiny or large fractions', () => {
    for (const f of [0.01, 0.99]) {
      const { train, val } = stratifiedSplit(items, f, 1);
      for (const label of [0, 1, 2]) {
        assert.ok(count(train, label) >= 1 && count(val, label) >= 1, `fraction ${f}, class ${label}`);
      }
    }
  });

  test('deterministic for a seed; different seeds differ', () => {
    const a = stratifiedSplit(items, 0.25, 7);
    const b = stratifiedSplit(items, 0.25, 7);
    assert.deepEqual(a, b);
    const c = stratifiedSplit(items, 0.25, 8);
    assert.notDeepEqual(a.val, c.val);
    assert.equal(c.val.length, a.val.length);
  });

  test('fraction 0 puts everything in train; bad fractions are refused', () => {
    assert.deepEqual(stratifiedSplit(items, 0, 1), { train: items, val: [] });
    assert.throws(() => stratifiedSplit(items, 1, 1), UsageError);
    assert.throws(() => stratifiedSplit(items, -0.1, 1), UsageError);
    assert.throws(() => stratifiedSplit(items, Number.NaN, 1), UsageError);
  });
});

describe('real data (GRAFT_SHARED)', () => {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const shared = resolve(process.env.GRAFT_SHARED ?? join(repo, '..', 'shared'));
  const cvd = join(shared, 'data', 'cats_vs_dogs', 'train');
  const pets = join(shared, 'data', 'oxford_pets');
  const skipCvd = existsSync(cvd) ? false : `shared data not found at ${cvd} (set GRAFT_SHARED)`;
  const skipPets = existsSync(pets) ? false : `shared data not found at ${pets} (set GRAFT_SHARED)`;

  test('cats_vs_dogs/train: folder layout, cats and dogs, 1000 each', { skip: skipCvd }, async () => {
    assert.equal(await detectLayout(cvd), 'folder');
    const ds = await openDataset(cvd);
    assert.equal(ds.layout, 'folder');
    assert.deepEqual(ds.classes, ['cats', 'dogs']);
    assert.equal(ds.items.filter((i) => i.label === 0).length, 1000);
    assert.equal(ds.items.filter((i) => i.label === 1).length, 1000);
    assert.deepEqual(ds.skipped, []);
  });

  test('oxford_pets: 37 breeds, 594 images from images/ only, species counts', { skip: skipPets }, async () => {
    assert.equal(await detectLayout(pets), 'oxford-pets');
    const ds = await openDataset(pets);
    assert.equal(ds.layout, 'oxford-pets');
    assert.equal(ds.classes.length, 37);
    assert.equal(ds.items.length, 594);
    assert.deepEqual(ds.skipped, []);
    assert.ok(ds.items.every((i) => i.path.startsWith(join(pets, 'images') + '/')), 'ds.items.every((i) => i.path.startsWith(join(pets, \'images\') + \'...');
    assert.ok(!ds.items.some((i) => i.path.includes('/quirks/')), '!ds.items.some((i) => i.path.includes(\'/quirks/\'))');
    assert.equal(ds.classes[0], 'Abyssinian');
    assert.equal(ds.classes[1], 'american_bulldog');
    assert.equal(ds.classes[36], 'yorkshire_terrier');
    // the class order matches the list's own CLASS-ID (1-based, case-insensitive alphabetical)
    const list = (await import('../src/data/index.js')).readPetList;
    const { byImage } = await list(join(pets, 'annotations', 'list.txt'));
    for (const it of ds.items) {
      const name = it.path.slice(it.path.lastIndexOf('/') + 1).replace(/\.jpg$/, '');
      assert.equal(byImage.get(name)?.classId, it.label + 1, name);
    }
    const species = await openDataset(pets, { label: 'species' });
    assert.deepEqual(species.classes, ['cat', 'dog']);
    const cats = species.items.filter((i) => i.label === 0).length;
    const dogs = species.items.filter((i) => i.label === 1).length;
    assert.equal(cats + dogs, 594);
    assert.equal(cats, 297);
    assert.equal(dogs, 297);
    // each split side gets every breed
    const { train, val } = stratifiedSplit(ds.items, 0.2, 0);
    assert.equal(new Set(train.map((i) => i.label)).size, 37);
    assert.equal(new Set(val.map((i) => i.label)).size, 37);
  });
});
