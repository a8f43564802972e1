/**
 * The gradient graphs are plain ONNX: onnxruntime-web (wasm, the engine a browser has) runs them in Node and gets
 * what onnxruntime-node gets, so that a page can later fine-tune with the same graphs.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import * as ortWeb from 'onnxruntime-web';
import { GradientProgram } from '../src/engine/grad/program.js';
import { parseOnnx } from '../src/models/onnx-file.js';
import { withOutputs } from '../src/onnx/cut.js';
import { DT } from '../src/onnx/proto.js';
import { tinyCnn } from './helpers/tiny-cnn.js';
import { buildOnnx } from './helpers/onnx-builder.js';
import { resnetOnnx } from './helpers/resnet.js';
import { MOBILENET, SKIP_SHARED } from './helpers/shared.js';

ortWeb.env.wasm.numThreads = 1;

function relL2(a: Float32Array, b: Float32Array): number {
  let n = 0;
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    n += (a[i]! - b[i]!) ** 2;
    d += b[i]! ** 2;
  }
  return Math.sqrt(n / Math.max(d, 1e-30));
}

/** Run a program's graph on onnxruntime-web with the same feeds; every gradient compared with the node result. */
async function compare(prog: GradientProgram, feeds: Record<string, Float32Array>): Promise<{ loss: [number, number]; worst: number }> {
  const r = await prog.run(feeds);
  const s = await ortWeb.InferenceSession.create(prog.graph.bytes, { executionProviders: ['wasm'] });
  try {
    const input: Record<string, ortWeb.Tensor> = {};
    for (const i of prog.graph.inputs) input[i.name] = new ortWeb.Tensor('float32', feeds[i.name]!, i.dims);
    const o = await s.run(input);
    let worst = 0;
    for (const [t, name] of Object.entries(prog.graph.grads)) worst = Math.max(worst, relL2(o[name]!.data as Float32Array, r.grads[t]!));
    return { loss: [(o[prog.graph.loss]!.data as Float32Array)[0]!, r.loss], worst };
  } finally {
    await s.release();
  }
}

test('onnxruntime-web computes the same fine-tuning gradients as onnxruntime-node (tiny CNN, every weight and the input)', async () => {
  const bytes = buildOnnx(tinyCnn());
  const params = ['c0_w', 'c0_b', 'dw_w', 'dw_b', 'pw_w', 'bn_s', 'bn_b', 'fc_w', 'fc_b'];
  const prog = await GradientProgram.create(bytes, { batch: 4, params, wrt: ['input', ...params], loss: [{ kind: 'cross-entropy', logits: 'logits', targets: 't' }] });
  try {
    const x = Float32Array.from({ length: 4 * 3 * 8 * 8 }, (_, i) => Math.sin(i * 0.7));
    const t = Float32Array.from({ length: 12 }, (_, i) => (i % 3 === i % 4 % 3 ? 0.25 : 0));
    const { loss, worst } = await compare(prog, { input: x, t, ...prog.paramValues() });
    assert.ok(Math.abs(loss[0] - loss[1]) < 1e-5 * Math.abs(loss[1]) + 1e-7, `loss ${loss[0]} vs ${loss[1]}`);
    assert.ok(worst < 1e-5, `worst relative L2 difference ${worst}`);
  } finally {
    await prog.release();
  }
});

test('onnxruntime-web: a small ResNet\'s input gradient (ReLU masks as 1x1 convolutions, ConvTranspose, max pool)', async () => {
  const bytes = resnetOnnx({ stages: [1, 1], width: 8, size: 32, classes: 5 });
  const prog = await GradientProgram.create(bytes, { batch: 2, wrt: ['input'], loss: [{ kind: 'dot', output: 'logits', weights: 'w' }] });
  try {
    // The formulations this test is for are in the graph (op types are plain strings in the protobuf).
    for (const op of ['ConvTranspose', 'Clip', 'ScatterElements']) assert.ok(Buffer.from(prog.graph.bytes).includes(op), `no ${op} in the gradient graph`);
    const x = Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.37));
    const w = Float32Array.from({ length: 10 }, (_, i) => (i % 3) - 1);
    const { loss, worst } = await compare(prog, { input: x, w });
    assert.ok(Math.abs(loss[0] - loss[1]) < 1e-5 * Math.abs(loss[1]) + 1e-7, `loss ${loss[0]} vs ${loss[1]}`);
    assert.ok(worst < 1e-5, `worst relative L2 difference ${worst}`);
  } finally {
    await prog.release();
  }
});

test('onnxruntime-web: the shared MobileNet input gradient', { skip: SKIP_SHARED }, async () => {
  const full = parseOnnx(new Uint8Array(await readFile(MOBILENET)), MOBILENET);
  const x = Float32Array.from({ length: 3 * 224 * 224 }, (_, i) => Math.sin(i * 0.37));
  // Through the first 12 blocks the two engines agree to float rounding.
  const cut = '/n/Clip_12_output_0';
  const part = await GradientProgram.create(withOutputs(full.bytes, [cut], DT.FLOAT), { batch: 1, wrt: ['input'], loss: [{ kind: 'dot', output: cut, weights: 'w' }] });
  const wDims = part.graph.inputs.find((i) => i.name === 'w')!.dims;
  const w = Float32Array.from({ length: wDims.reduce((a, b) => a * b, 1) }, (_, i) => Math.cos(i * 0.1));
  const a = await compare(part, { input: x, w });
  await part.release();
  assert.ok(a.worst < 1e-5, `12 blocks: relative L2 difference ${a.worst}`);
  // Through the whole network, a handful of activations sit within rounding of a ReLU6 bound (6 or 0) and take the
  // other side of the mask on one engine: measured 3e-3 relative on the full gradient, which is still the same
  // gradient for any use (the forward passes agree to 1.4e-6).
  const whole = await GradientProgram.create(full.bytes, { batch: 1, wrt: ['input'], loss: [{ kind: 'cross-entropy', logits: 'logits', targets: 't' }] });
  const t = new Float32Array(1000);
  t[281] = 1;
  const b = await compare(whole, { input: x, t });
  await whole.release();
  assert.ok(Math.abs(b.loss[0] - b.loss[1]) < 1e-5 * b.loss[1], `loss ${b.loss[0]} vs ${b.loss[1]}`);
  assert.ok(b.worst < 1e-2, `whole network: relative L2 difference ${b.worst}`);
});
