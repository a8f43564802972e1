/**
 * The gradient programs on the real MobileNet: the input gradient and every weight's gradient of a cross-entropy
 * equal the TF.js executor's (the engine they replace) within 1e-4 relative (L2 over each tensor); a run's head and
 * the pixel-space preprocessing are differentiated too (what dream and attack use).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { GradientProgram } from '../src/engine/grad/program.js';
import { PIXEL_LOGITS, PIXELS, withPixelInput } from '../src/engine/grad/pixels.js';
import { setBackend, tf, TfExecutor } from './helpers/tf/index.js';
import { defaultSpec } from '../src/image/spec.js';
import { loadOnnx } from '../src/models/onnx-file.js';
import { MOBILENET, SKIP_SHARED } from './helpers/shared.js';

function relL2(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

const N = 2;
const wave = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * 0.9);

describe('gradients of the shared MobileNet on ONNX Runtime', { skip: SKIP_SHARED }, () => {
  test('input and all weight gradients equal the TF.js executor within 1e-4', async () => {
    await setBackend('wasm');
    const model = await loadOnnx(MOBILENET);
    const ex = await TfExecutor.load(model, { backend: 'wasm', outputs: ['logits'], trainable: 'all' });
    try {
      const params = ex.trainable;
      assert.ok(params.length > 50, `${params.length} trainable weights`);
      const prog = await GradientProgram.create(model.bytes, { batch: N, params, wrt: ['input', ...params], loss: [{ kind: 'cross-entropy', logits: 'logits', targets: 't' }], outputs: ['logits'] });
      const x = wave(N * 3 * 224 * 224, 0.37);
      const t = new Float32Array(N * 1000);
      t[281] = 0.5;
      t[1000 + 207] = 0.5;
      const r = await prog.run({ input: x, t, ...prog.paramValues() });
      await prog.release();

      const input = tf.tensor4d(x, [N, 3, 224, 224]);
      const tt = tf.tensor2d(t, [N, 1000]);
      const loss = (i: tf.Tensor) => tf.neg(tf.sum(tf.mul(tt, tf.logSoftmax(ex.run(i).logits!)))) as tf.Scalar;
      const vars = params.map((p) => ex.variables[p]!);
      const { value, grads } = tf.variableGrads(() => loss(input), vars);
      const gx = tf.grad(loss)(input);
      assert.ok(Math.abs(r.loss - value.dataSync()[0]!) < 1e-4 * Math.abs(r.loss), `loss ${r.loss} vs ${value.dataSync()[0]}`);
      const errs: [string, number][] = [['input', relL2(r.grads.input!, gx.dataSync() as Float32Array)]];
      params.forEach((p, i) => errs.push([p, relL2(r.grads[p]!, grads[vars[i]!.name]!.dataSync() as Float32Array)]));
      const worst = errs.reduce((m, e) => (e[1] > m[1] ? e : m));
      assert.ok(worst[1] < 1e-4, `worst relative L2 difference ${worst[1]} (${worst[0]})`);
      for (const tns of [input, tt, value, gx, ...Object.values(grads)]) tns.dispose();
    } finally {
      ex.dispose();
    }
  });

  test('pixel-space gradient: preprocessing in the graph equals the chain rule by hand', async () => {
    const model = await loadOnnx(MOBILENET);
    const spec = defaultSpec({ mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] });
    const pixels = withPixelInput(model.bytes, spec, { logits: { tensor: 'logits', probabilities: false } });
    const onPixels = await GradientProgram.create(pixels, { batch: 1, wrt: [PIXELS], loss: [{ kind: 'cross-entropy', logits: PIXEL_LOGITS, targets: 't' }] });
    const onInput = await GradientProgram.create(new Uint8Array(await readFile(MOBILENET)), { batch: 1, wrt: ['input'], loss: [{ kind: 'cross-entropy', logits: 'logits', targets: 't' }] });
    try {
      const px = Float32Array.from(wave(224 * 224 * 3, 0.11), (v) => 0.5 + 0.4 * v); // [H, W, 3] in [0, 1]
      const nchw = new Float32Array(3 * 224 * 224);
      for (let i = 0; i < 224 * 224; i++) for (let c = 0; c < 3; c++) nchw[c * 224 * 224 + i] = (px[i * 3 + c]! - 0.5) / 0.5;
      const t = new Float32Array(1000);
      t[281] = 1;
      const a = await onPixels.run({ [PIXELS]: px, t });
      const b = await onInput.run({ input: nchw, t });
      assert.ok(Math.abs(a.loss - b.loss) < 1e-5 * b.loss);
      // d/dpixel = d/dinput · 1/std, moved from NCHW to HWC
      const expected = new Float32Array(px.length);
      for (let i = 0; i < 224 * 224; i++) for (let c = 0; c < 3; c++) expected[i * 3 + c] = b.grads.input![c * 224 * 224 + i]! / 0.5;
      assert.ok(relL2(a.grads[PIXELS]!, expected) < 1e-5, `relative difference ${relL2(a.grads[PIXELS]!, expected)}`);
    } finally {
      await onPixels.release();
      await onInput.release();
    }
  });
});
