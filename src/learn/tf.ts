/**
 * TF.js, pure-JS CPU backend only (no tfjs-node): used for the small heads trained on extracted features, where
 * gradients matter more than raw speed.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { GraftError } from '../errors.js';

let ready: Promise<void> | undefined;

/** Select the CPU backend once; every entry point that touches `tf` awaits this first. */
export function ensureTf(): Promise<void> {
  ready ??= (async () => {
    // Production mode: skips debug checks and silences the "install tfjs-node" banner the CPU backend prints.
    tf.enableProdMode();
    const ok = await tf.setBackend('cpu');
    if (!ok) throw new GraftError('could not initialise the TensorFlow.js CPU backend');
    await tf.ready();
  })();
  return ready;
}

export { tf };
