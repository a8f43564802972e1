/**
 * Feature visualisation (src/vision/featurevis): the FFT, each parameterisation, transform and objective on small
 * models built here, with adjoint (dot-product) and finite-difference checks; seeds reproduce outputs byte for byte;
 * a short dream on the shared MobileNet.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import onnxProto from 'onnx-proto';
import { buildOnnx } from './helpers/onnx-builder.js';
import { decodeImage } from '../src/image/decode.js';
import { dreamTask } from '../src/tasks/dream.js';
import { loadClassifier, type DiffClassifier } from '../src/vision/classifier.js';
import { dream } from '../src/vision/dream.js';
import { fftPlan, naiveDft } from '../src/vision/featurevis/fft.js';
import { channel, classLogit, classLogProb, describe as describeObjective, direction, diversity, diversityGrad, geometry, matchClass, neuron, objectiveModel, parseObjective, sum, scale } from '../src/vision/featurevis/objectives.js';
import { applyColour, colourMatrix, FourierBasis, makeParam, spectrumScale } from '../src/vision/featurevis/param.js';
import { createParam, fourierParamOnOrt } from '../src/vision/featurevis/param-ort.js';
import { renderVis } from '../src/vision/featurevis/render.js';
import { shortNames } from '../src/vision/featurevis/sheet.js';
import { compose, drawChain, drawView, jitter, pad, randomRotate, randomScale, Sampler, standardTransforms, viewFor } from '../src/vision/featurevis/transforms.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { mulberry32 } from '../src/util/random.js';
import { MOBILENET, SKIP_SHARED } from './helpers/shared.js';
import { tinyCnn } from './helpers/tiny-cnn.js';
import { tinyClassifier } from './helpers/tiny-onnx.js';

const rand = (n: number, seed: number, s = 1) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * s);
};
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};
const close = (a: number, b: number, rel: number, what: string) => assert.ok(Math.abs(a - b) <= rel * Math.max(1e-6, Math.abs(a), Math.abs(b)), `${what}: ${a} vs ${b}`);

describe('FFT', () => {
  test('any length agrees with the direct DFT, both directions', () => {
    for (const n of [1, 2, 3, 8, 12, 14, 17, 28, 224]) {
      const re = Float64Array.from(rand(n, n));
      const im = Float64Array.from(rand(n, n + 100));
      for (const inverse of [false, true]) {
        const [R, I] = naiveDft(re, im, inverse);
        const a = re.slice();
        const b = im.slice();
        fftPlan(n).transform(a, b, 0, 1, inverse);
        for (let k = 0; k < n; k++) {
          assert.ok(Math.abs(a[k]! - R[k]!) < 1e-9 * n && Math.abs(b[k]! - I[k]!) < 1e-9 * n, `n=${n} k=${k}`);
        }
      }
    }
  });
});

describe('parameterisations', () => {
  test('Fourier basis = the Hermitian inverse DFT (irfft2) of the scaled half spectrum, for even and odd sizes', () => {
    for (const [h, w] of [[6, 8], [5, 7], [4, 5]] as const) {
      const fb = new FourierBasis(h, w);
      const wh = Math.floor(w / 2) + 1;
      const spec = rand(h * wh * 2, h * 10 + w);
      const img = new Float32Array(h * w);
      fb.synthesise(spec, 0, img, 0, 1);
      // Direct: the full spectrum X[ky, kx] with X[ky, w − kx] = conj(X[−ky, kx]) for the columns not stored; numpy's
      // irfft2 ignores the imaginary part the Hermitian symmetry forbids (DC / Nyquist), which Re(·) does here too.
      const s = spectrumScale(h, w);
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          let v = 0;
          for (let ky = 0; ky < h; ky++)
            for (let kx = 0; kx < wh; kx++) {
              const a = spec[(ky * wh + kx) * 2]! * s[ky * wh + kx]!;
              const b = spec[(ky * wh + kx) * 2 + 1]! * s[ky * wh + kx]!;
              const t = 2 * Math.PI * ((ky * y) / h + (kx * x) / w);
              v += a * Math.cos(t) - b * Math.sin(t); // c_kx (1 or 2) and 1/(√(hw)·4) are in s
            }
          close(img[y * w + x]!, v, 1e-4, `${h}x${w} pixel ${y},${x}`);
        }
      // 1/f: the DC coefficient's scale is max(h, w) times that of no frequency, halved by c for interior columns.
      close(s[0]! * Math.sqrt(h * w) * 4, Math.max(h, w), 1e-9, 'DC scale');
      // Adjoint: ⟨L a, g⟩ = ⟨a, Lᵀ g⟩.
      const g = rand(h * w, 99);
      const back = new Float32Array(spec.length);
      fb.analyse(g, 0, 1, back, 0);
      close(dot(img, g), dot(spec, back), 1e-4, `${h}x${w} adjoint`);
    }
  });

  test('colour decorrelation: Lucid matrix with unit largest column; Mᵀ is its adjoint', () => {
    const m = colourMatrix();
    const norms = [0, 1, 2].map((c) => Math.hypot(m[c]!, m[3 + c]!, m[6 + c]!));
    close(Math.max(...norms), 1, 1e-12, 'largest column norm');
    const v = rand(30, 5);
    const g = rand(30, 6);
    const mv = v.slice();
    applyColour(m, mv, false);
    const mtg = g.slice();
    applyColour(m, mtg, true);
    close(dot(mv, g), dot(v, mtg), 1e-5, 'colour adjoint');
  });

  for (const kind of ['pixel', 'fourier'] as const)
    for (const decorrelate of [false, true])
      test(`${kind}${decorrelate ? ' + decorrelated' : ''}: pixels in (0,1); backward matches finite differences`, () => {
        const [n, h, w] = [2, 6, 5];
        const p = makeParam(n, h, w, { kind, decorrelate, sd: 0.5 }, mulberry32(3));
        const x = p.render().slice();
        assert.equal(x.length, n * h * w * 3);
        assert.ok(x.every((v) => v > 0 && v < 1));
        // loss = Σ g·x (x is non-linear in the params through the sigmoid)
        const g = rand(x.length, 11);
        const grad = p.backward(g).slice();
        const loss = () => dot(p.render(), g);
        const r = mulberry32(4);
        for (let t = 0; t < 12; t++) {
          const i = Math.floor(r() * p.params.length);
          const v0 = p.params[i]!;
          const eps = 1e-2;
          p.params[i] = v0 + eps;
          const up = loss();
          p.params[i] = v0 - eps;
          const down = loss();
          p.params[i] = v0;
          const fd = (up - down) / (2 * eps);
          assert.ok(Math.abs(fd - grad[i]!) < 2e-3 * Math.max(1, Math.abs(fd)), `param ${i}: fd ${fd} vs ${grad[i]}`);
        }
      });

  // The Fourier parameterisation renderVis runs (dense DFT matrices on ONNX Runtime) against the float64 FFT
  // reference: same initial values, same pixels, same adjoint, for even and odd sizes, with and without colour.
  for (const [n, h, w] of [[2, 6, 5], [1, 7, 8], [1, 32, 30]] as const)
    for (const decorrelate of [false, true])
      test(`fourier on ONNX Runtime ${n}x${h}x${w}${decorrelate ? ' + decorrelated' : ''} = the FFT reference (pixels and adjoint)`, async () => {
        const opts = { kind: 'fourier' as const, decorrelate, sd: 0.5 };
        const ref = makeParam(n, h, w, opts, mulberry32(3));
        const p = await fourierParamOnOrt(n, h, w, opts, mulberry32(3), 1);
        try {
          assert.deepEqual(p.params, ref.params);
          const want = ref.render().slice();
          const got = await p.render(new Float32Array(want.length));
          for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-6, `pixel ${i}: ${got[i]} vs ${want[i]}`);
          const g = rand(want.length, 12);
          const gw = ref.backward(g).slice();
          const gg = await p.backward(g, got, new Float32Array(gw.length));
          const scaleG = Math.max(...gw.map(Math.abs));
          for (let i = 0; i < gw.length; i++) assert.ok(Math.abs(gg[i]! - gw[i]!) < 1e-5 * scaleG, `param ${i}: ${gg[i]} vs ${gw[i]}`);
        } finally {
          await p.release();
        }
      });

  test('createParam: pixel stays in JavaScript with the same values as makeParam', async () => {
    const p = await createParam(1, 5, 4, { kind: 'pixel', decorrelate: true, sd: 0.5 }, mulberry32(9));
    const ref = makeParam(1, 5, 4, { kind: 'pixel', decorrelate: true, sd: 0.5 }, mulberry32(9));
    const x = await p.render(new Float32Array(60));
    assert.deepEqual(x, ref.render());
    await p.release();
  });

  test('seeded: the same seed gives the same initial values, another seed others', () => {
    const a = makeParam(1, 8, 8, { kind: 'fourier' }, mulberry32(1)).render().slice();
    const b = makeParam(1, 8, 8, { kind: 'fourier' }, mulberry32(1)).render().slice();
    const c = makeParam(1, 8, 8, { kind: 'fourier' }, mulberry32(2)).render().slice();
    assert.deepEqual(Buffer.from(a.buffer), Buffer.from(b.buffer));
    assert.notDeepEqual(Buffer.from(a.buffer), Buffer.from(c.buffer));
  });
});

describe('transforms', () => {
  const apply = (m: readonly number[], x: number, y: number) => [m[0]! * x + m[1]! * y + m[2]!, m[3]! * x + m[4]! * y + m[5]!];

  test('each transform maps coordinates as described', () => {
    const rng = mulberry32(1);
    const c = { w: 10, h: 8 };
    const p = pad(3).apply(c, rng);
    assert.deepEqual(p.canvas, { w: 16, h: 14 });
    assert.deepEqual(apply(p.map, 3, 3), [0, 0], 'padded (3,3) is the source origin');
    for (let t = 0; t < 20; t++) {
      const j = jitter(4).apply(c, rng);
      assert.deepEqual(j.canvas, { w: 6, h: 4 });
      assert.ok(j.map[2] >= 0 && j.map[2] <= 4 && j.map[5] >= 0 && j.map[5] <= 4 && Number.isInteger(j.map[2]));
    }
    const s = randomScale([2]).apply(c, rng);
    assert.deepEqual(s.canvas, { w: 20, h: 16 });
    assert.deepEqual(apply(s.map, 1, 1), [0.25, 0.25], 'pixel 1 of the doubled canvas sits at 0.25 (pixel centres)');
    assert.deepEqual(apply(s.map, 19.5 - 0.5, 15), [9.25, 7.25]);
    const r = randomRotate([90]).apply({ w: 5, h: 5 }, rng);
    assert.deepEqual(r.canvas, { w: 5, h: 5 });
    const [cx, cy] = apply(r.map, 2, 2);
    close(cx!, 2, 1e-12, 'centre x');
    close(cy!, 2, 1e-12, 'centre y');
    const [x1, y1] = apply(r.map, 4, 2); // 90°: a point right of the centre comes from above or below it
    close(x1!, 2, 1e-12, 'rotated x');
    close(Math.abs(y1! - 2), 2, 1e-12, 'rotated y');
  });

  test('no transforms and the same size: the view is the image itself', () => {
    const img = rand(6 * 7 * 3, 2);
    const view = drawView([], { w: 7, h: 6 }, { w: 7, h: 6 }, mulberry32(1));
    const out = new Sampler(view, 7, 6).forward(img, 1);
    for (let i = 0; i < img.length; i++) close(out[i]!, img[i]!, 1e-6, `pixel ${i}`);
  });

  test('sampling through a random chain: the adjoint is exact (dot products), fill outside, seeds reproduce', () => {
    const [w, h, n] = [20, 16, 2];
    for (let seed = 1; seed <= 5; seed++) {
      const ts = [pad(3), jitter(2), randomScale([0.8, 1.25]), randomRotate([-30, 17]), jitter(1)];
      const v1 = drawView(ts, { w, h }, { w: 12, h: 10 }, mulberry32(seed));
      const v2 = drawView(ts, { w, h }, { w: 12, h: 10 }, mulberry32(seed));
      assert.deepEqual(v1, v2, 'the same seed draws the same view');
      const sZero = new Sampler(v1, w, h, 0);
      const x = rand(n * w * h * 3, seed);
      const g = rand(n * 12 * 10 * 3, seed + 50);
      const ax = sZero.forward(x, n);
      const atg = sZero.adjointInto(g, n, new Float32Array(x.length));
      close(dot(ax, g), dot(x, atg), 1e-5, `seed ${seed} adjoint`);
      // A constant fill is an affine offset: the grey picture stays grey whatever the view.
      const grey = new Sampler(v1, w, h, 0.5).forward(new Float32Array(x.length).fill(0.5), n);
      assert.ok(grey.every((v) => Math.abs(v - 0.5) < 1e-6));
    }
  });

  test('standard set scales with the image size; views resize the last canvas to each model size', () => {
    assert.deepEqual(standardTransforms(224).map((t) => t.name), ['pad(12)', 'jitter(8)', 'scale(0.9..1.1)', 'rotate(-10..10)', 'jitter(4)']);
    assert.deepEqual(standardTransforms(112).map((t) => t.name).slice(0, 2), ['pad(6)', 'jitter(4)']);
    const chain = drawChain([pad(2)], { w: 8, h: 8 }, mulberry32(1));
    const v = viewFor(chain, { w: 24, h: 24 });
    assert.equal(v.outW, 24);
    // output pixel centre 1 (of 24 over a 12-wide canvas) is canvas 0.25 → source −1.75
    close(v.map[0] * 1 + v.map[2], 0.25 - 2, 1e-12, 'resize map');
    assert.deepEqual(compose([1, 0, 1, 0, 1, 2], [2, 0, 0, 0, 2, 0]), [2, 0, 1, 0, 2, 2]);
  });
});

describe('objectives', () => {
  let dir: string;
  let tiny: DiffClassifier;
  let cnn: DiffClassifier;
  const S = 8;
  const meta = (labels: string[]) => ({ 'Image.NominalPixelRange': 'Normalized_0_1', 'Image.BitmapPixelFormat': 'Rgb8', 'graft.labels': JSON.stringify(labels) });
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-fv-'));
    await writeFile(join(dir, 'tiny.onnx'), tinyClassifier({ size: S, channels: 4, classes: 3, metadata: meta(['red', 'green, verdant', 'blue']) }));
    const m = parseOnnx(buildOnnx(tinyCnn()), 'cnn.onnx');
    m.proto.metadataProps = Object.entries(meta(['a', 'b', 'c'])).map(([key, value]) => ({ key, value })) as never;
    await writeFile(join(dir, 'cnn.onnx'), onnxProto.onnx.ModelProto.encode(m.proto).finish());
    tiny = await loadClassifier(join(dir, 'tiny.onnx'));
    cnn = await loadClassifier(join(dir, 'cnn.onnx'));
  });
  after(async () => {
    await tiny?.dispose();
    await cnn?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  test('parse, describe, sums and weights', () => {
    const o = parseObjective('tabby + 0.5*conv_pw_13_relu:42 + neuron:conv:3@1,2 + prob:zebra + direction:relu_out:1,0,-1,0.5 + diversity:relu_out');
    assert.deepEqual(o.terms.map((t) => t.kind), ['logit', 'channel', 'neuron', 'logprob', 'direction', 'diversity']);
    assert.deepEqual(o.terms[1], { kind: 'channel', layer: 'conv_pw_13_relu', channel: 42, weight: 0.5 });
    assert.deepEqual(o.terms[2], { kind: 'neuron', layer: 'conv', channel: 3, y: 1, x: 2, weight: 1 });
    assert.equal(describeObjective(parseObjective('prob:tabby + 2*l:3')), 'prob:tabby + 2*l:3');
    assert.deepEqual(parseObjective('class:zebra', 'logprob').terms[0], { kind: 'logprob', class: 'zebra', weight: 1 });
    assert.deepEqual(scale(sum(channel('a', 1), classLogit(2)), 3).terms.map((t) => t.weight), [3, 3]);
    assert.throws(() => parseObjective('channel:layer:x'), /not a channel number/);
    assert.equal(matchClass(['background', 'tabby, tabby cat', 'tiger cat'], 'tabby'), 1, 'by synonym');
    assert.equal(matchClass(['tabby', 'zebra'], 'tabby, tabby cat'), 0, 'by first synonym');
  });

  test('the values are what they say (hand-checkable on the 1x1-conv model: channel mean of relu_out = features)', async () => {
    const x = rand(S * S * 3, 21, 0.5).map((v) => v + 0.5);
    const logitsOf = async () => (await (await objectiveModel(tiny, classLogit(0), 1)).evaluate(x)).logits;
    const logits = await logitsOf();
    const evalLoss = async (o: Parameters<typeof objectiveModel>[1]) => {
      const om = await objectiveModel(tiny, o, 1);
      try {
        return (await om.evaluate(x)).loss;
      } finally {
        await om.release();
      }
    };
    // The features are the mean over positions of relu_out; logits = features·fc_w (+0): recover them from both.
    const features = await Promise.all([0, 1, 2, 3].map(async (c) => -(await evalLoss(channel('relu', c)))));
    for (let k = 0; k < 3; k++) {
      let z = 0;
      for (let j = 0; j < 4; j++) z += features[j]! * Math.cos(j * 3 + k);
      close(z, logits[k]!, 1e-4, `logit ${k} from channel means`);
      close(-(await evalLoss(classLogit(k))), logits[k]!, 1e-5, `logit objective ${k}`);
    }
    const lse = Math.log(Array.from(logits).reduce((a, v) => a + Math.exp(v), 0));
    close(-(await evalLoss(classLogProb('blue'))), logits[2]! - lse, 1e-4, 'log-probability');
    close(-(await evalLoss(classLogProb('verdant'))), logits[1]! - lse, 1e-4, 'class by synonym');
    close(-(await evalLoss(direction('relu', [1, 0, -2, 0.5]))), features[0]! - 2 * features[2]! + 0.5 * features[3]!, 1e-4, 'direction');
    close(-(await evalLoss(sum(scale(channel('relu', 1), 2), classLogit(0)))), 2 * features[1]! + logits[0]!, 1e-4, 'weighted sum');
    // A neuron at the centre of a 1x1 conv: relu(Σ_ch w·x + 0.1) at pixel (4, 4).
    const p = (4 * S + 4) * 3;
    const manual = Math.max(0, [0, 1, 2].reduce((a, ch) => a + Math.sin(1 + 2 * 3 + ch) * x[p + ch]!, 0.1));
    close(-(await evalLoss(neuron('relu', 2))), manual, 1e-4, 'neuron');
    await assert.rejects(evalLoss(channel('relu', 9)), /out of range/);
    await assert.rejects(evalLoss(channel('nope', 0)), /no layer/);
  });

  const fdCheck = async (model: DiffClassifier, o: Parameters<typeof objectiveModel>[1], n: number, what: string) => {
    const om = await objectiveModel(model, o, n);
    try {
      const x = rand(n * S * S * 3, 31, 0.4).map((v) => v + 0.5);
      const { grad } = await om.evaluate(x);
      const r = mulberry32(9);
      let checked = 0;
      for (let t = 0; t < 10; t++) {
        const i = Math.floor(r() * x.length);
        const eps = 2e-3; // small: the ReLUs' kinks
        const x1 = x.slice();
        x1[i]! += eps;
        const x2 = x.slice();
        x2[i]! -= eps;
        const fd = ((await om.evaluate(x1)).loss - (await om.evaluate(x2)).loss) / (2 * eps);
        assert.ok(Math.abs(fd - grad[i]!) < 2e-2 * Math.max(0.05, Math.abs(fd)), `${what}: pixel ${i}: fd ${fd} vs ${grad[i]}`);
        checked++;
      }
      assert.equal(checked, 10);
    } finally {
      await om.release();
    }
  };

  test('pixel gradients match finite differences: logit, log-probability, channel, neuron, direction (3x3 convs)', async () => {
    await fdCheck(cnn, classLogit('b'), 1, 'logit');
    await fdCheck(cnn, classLogProb('c'), 1, 'logprob');
    await fdCheck(cnn, channel('dw', 2), 1, 'channel');
    await fdCheck(cnn, neuron('dw', 1, { y: 3, x: 4 }), 1, 'neuron');
    await fdCheck(cnn, direction('pw', [1, -1, 0.5, 0, 2, -0.3]), 1, 'direction');
    await fdCheck(cnn, sum(classLogit('a', 0.5), channel('conv0', 3, 2)), 2, 'weighted sum, batch of 2');
  });

  test('diversity: value and gradient (finite differences in activations, and through the network)', async () => {
    const [n, C, h, w] = [3, 4, 2, 3];
    const data = rand(n * C * h * w, 41);
    const geo = geometry([n, C, h, w], 'NCHW');
    const { value, grad } = diversityGrad(data, geo, n);
    assert.ok(value < 0 && value >= -(n - 1) - 1e-9, `−(1/N)Σ cos ∈ [−(N−1), …]: ${value}`);
    const r = mulberry32(2);
    for (let t = 0; t < 8; t++) {
      const i = Math.floor(r() * data.length);
      const eps = 1e-3;
      const a = data.slice();
      a[i]! += eps;
      const b = data.slice();
      b[i]! -= eps;
      const fd = (diversityGrad(a, geo, n).value - diversityGrad(b, geo, n).value) / (2 * eps);
      close(fd, grad[i]!, 2e-2, `activation ${i}`);
    }
    // Identical images: every pair of Gram matrices is the same, so D = −(N−1).
    const same = new Float32Array(2 * C * h * w);
    same.set(data.subarray(0, C * h * w));
    same.set(data.subarray(0, C * h * w), C * h * w);
    close(diversityGrad(same, geometry([2, C, h, w], 'NCHW'), 2).value, -1, 1e-6, 'identical pair');
    await fdCheck(cnn, sum(classLogit('a'), diversity('dw', 0.5)), 2, 'logit + diversity');
  });

  test('render: a short run raises the objective; the same seed reproduces the pictures byte for byte', async () => {
    const run = async (seed: number) => {
      const om = await objectiveModel(cnn, sum(classLogit('b'), diversity('dw', 0.1)), 2);
      try {
        return await renderVis([om], { steps: 15, seed, transforms: [pad(1), jitter(2), randomScale([0.9, 1.1]), randomRotate([-10, 10])], tv: 0.05, param: { kind: 'fourier' } });
      } finally {
        await om.release();
      }
    };
    const a = await run(3);
    const b = await run(3);
    const c = await run(4);
    assert.equal(a.images.length, 2);
    assert.ok(a.images.every((im, i) => im.data.equals(b.images[i]!.data)), 'same seed, same bytes');
    assert.ok(!a.images[0]!.data.equals(c.images[0]!.data), 'another seed, another picture');
    assert.ok(a.history.at(-1)!.loss < a.history[0]!.loss, `loss ${a.history[0]!.loss} → ${a.history.at(-1)!.loss}`);
  });

  test('dreamTask --compare: four stages, judged, one sheet PNG and a JSON; shortNames drops the shared prefix', async () => {
    const out = join(dir, 'sheet.png');
    const res = await dreamTask(join(dir, 'tiny.onnx'), { className: 'blue', compare: true, judges: [join(dir, 'tiny.onnx')], steps: 3, out });
    assert.deepEqual(res.stages!.map((s) => s.title), ['plain gradient ascent', '+ total variation', '+ Fourier, decorrelated colour', '+ pad, jitter, scale, rotate']);
    for (const s of res.stages!) {
      assert.equal(s.verdicts.length, 1);
      assert.equal(s.verdicts[0]!.top5.length, 3, 'a 3-class judge lists its 3 classes');
      assert.ok(s.verdicts[0]!.probability !== null && Math.abs(s.verdicts[0]!.probability - s.probability) < 1e-5, 'the judge is the same network');
      assert.equal((await decodeImage(s.png!)).width, S);
    }
    const sheet = await decodeImage(out);
    assert.ok(sheet.width > 4 * S && sheet.height > S);
    assert.ok(JSON.parse(await readFile(join(dir, 'sheet.json'), 'utf8')).stages.length === 4);
    assert.deepEqual(shortNames(['mobilenet_v1_0.25', 'mobilenet_v2_q']), { prefix: 'mobilenet_', names: ['v1_0.25', 'v2_q'] });
    assert.deepEqual(shortNames(['a', 'b']), { prefix: '', names: ['a', 'b'] });
  });

  test('dream on a tiny model: every option combination runs, the class gets more probable', async () => {
    for (const param of ['pixel', 'fourier'] as const)
      for (const transforms of [false, true]) {
        const r = await dream(tiny, { classIndex: 1, classScore: 'logprob', steps: 12, param, transforms, seed: 1 });
        assert.equal(r.image.width, S);
        assert.ok(r.probability > r.history[0]!.probability, `${param} transforms=${transforms}: p=${r.history[0]!.probability} → ${r.probability}`);
      }
  });
});

describe('shared MobileNet: a short dream', { skip: SKIP_SHARED }, () => {
  test('default settings: the class wins on the source network after 40 steps; seeds reproduce bytes', async () => {
    const model = await loadClassifier(MOBILENET);
    try {
      const tabby = matchClass(model.classes, 'tabby');
      const a = await dream(model, { classIndex: tabby, steps: 40, seed: 5 });
      const b = await dream(model, { classIndex: tabby, steps: 40, seed: 5 });
      assert.ok(a.image.data.equals(b.image.data), 'same seed, same bytes');
      const [p] = await model.probabilities([a.image]);
      const top = p!.reduce((best, v, i) => (v > p![best]! ? i : best), 0);
      assert.equal(model.classes[top], model.classes[tabby], `top class ${model.classes[top]} (p tabby ${p![tabby]})`);
      // A layer objective on the real network runs too.
      const ch = await dream(model, { classIndex: tabby, objective: channel('/n/Clip_20', 7), steps: 5, seed: 1 });
      assert.ok(ch.history.at(-1)!.loss < ch.history[0]!.loss);
    } finally {
      await model.dispose();
    }
  });
});
