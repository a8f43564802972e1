import sharp from 'sharp';
import { loadTensor, defaultSpec } from './src/image/index.js';
const stripes = [0, 1, 0, 1, 1, 0, 0, 1];
const raw = Buffer.alloc(24); stripes.forEach((v,i)=>raw.fill(v?255:0,i*3,i*3+3));
const up = await sharp(raw,{raw:{width:8,height:1,channels:3}}).png().toBuffer();
for (const interpolation of ['nearest','bilinear'] as const) { console.log(interpolation); const t = await loadTensor(up, defaultSpec({ size: [1, 24], interpolation, mean:[0,0,0], std:[1,1,1] })); console.log(Array.from(t.subarray(0,24)).join(' ')); }
