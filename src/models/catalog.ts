/**
 * The model catalog: one typed entry per pre-trained model graft knows by name (like timm's pretrained configs), each
 * pointing at the official public release of its files. The entry's metadata, not the call site, decides how images
 * are preprocessed for it.
 */
import { IMAGENET_MEAN_STD, RANGE_0_1, RANGE_0_255, RANGE_MINUS1_1, type PreprocessSpec } from '../image/spec.js';
import { MOBILENET_V1_075_224_TFJS_FILES } from './catalog-hashes.js';
import { editDistance } from '../util/numeric.js';

/** The format a release is published in. Anything but `onnx` goes through an importer before it can run. */
export type ModelFormat = 'onnx' | 'tfjs-layers' | 'tfjs-graph' | 'tflite';
export const MODEL_FORMATS: readonly ModelFormat[] = ['onnx', 'tfjs-layers', 'tfjs-graph', 'tflite'];

/** Which class names the classifier's outputs mean: ImageNet-1k, ImageNet-1k with a background class first, none. */
export type LabelSet = 'imagenet-1000' | 'imagenet-1001' | 'none';

export interface CatalogFile {
  /**
   * The file's name in the model's folder: a relative path that stays inside it. A mirror serves it at
   * `<mirror>/<entry name>/<name>`.
   */
  name: string;
  /** Where the official release publishes it, tried in order. */
  urls: string[];
  /** Size in bytes, when known. */
  size?: number;
  /** SHA-256 (hex), when known. Unknown checksums are recorded by the first download (trust on first use). */
  sha256?: string;
}

export interface CatalogEntry {
  /** What users type: `graft pull <name>`, `--model <name>`, `Backbone.load(<name>)`. */
  name: string;
  /** Architecture family: vgg, resnet, mobilenet_v1, mobilenet_v2, mobilenet_v3, efficientnet_lite. */
  family: string;
  description: string;
  format: ModelFormat;
  /**
   * The release's files; the first is the entry point (the .onnx, the model.json or the .tflite). For TF.js models,
   * weight shards not listed here are read from model.json's weightsManifest when the model is pulled, and fetched
   * from beside model.json.
   */
  files: CatalogFile[];
  /** Where the release is documented. */
  homepage: string;
  license: string;
  /** How images become this model's input: size, resize-then-crop ratio, interpolation, normalisation, layout, channel order. */
  preprocess: PreprocessSpec;
  labels: LabelSet;
  /**
   * The node or tensor whose output is the pooled feature vector, in the release's own naming. Undefined: the input
   * of the classifier (graft finds it by walking back from the class scores).
   */
  featureNode?: string;
  /** The node or tensor giving the class scores, in the release's own naming. Undefined: found from the outputs. */
  classifierNode?: string;
  /** Trainable parameters (approximate, from the release or the paper). */
  params?: number;
  /** Multiply-accumulates of one forward pass at `preprocess.size` (the "FLOPs" papers quote; real FLOPs ~ 2x). */
  macs?: number;
  /** Approximate download size in bytes, for listings, when the files' exact sizes are not all known. */
  approxBytes?: number;
}

const ONNX_ZOO = 'https://github.com/onnx/models/raw/main/validated/vision/classification';
const TFJS_STORAGE = 'https://storage.googleapis.com/tfjs-models/tfjs';
const TFHUB_GCS = 'https://storage.googleapis.com/tfhub-tfjs-modules/google/tfjs-model/imagenet';
const TFHUB = 'https://tfhub.dev/google/tfjs-model/imagenet';

function spec(
  size: number,
  norm: { mean: readonly number[]; std: readonly number[] },
  layout: 'NCHW' | 'NHWC',
  cropPct: number | null,
): PreprocessSpec {
  return {
    size: [size, size],
    cropPct,
    interpolation: 'bilinear',
    mean: [...norm.mean] as [number, number, number],
    std: [...norm.std] as [number, number, number],
    layout,
    channelOrder: 'RGB',
  };
}

/** The ONNX model zoo's MXNet/Gluon exports: resize the short side to 256, centre-crop 224, ImageNet mean/std, NCHW. */
const GLUON = spec(224, IMAGENET_MEAN_STD, 'NCHW', 0.875);
/** TensorFlow's EfficientNet-Lite: (x - 127) / 128 on 0-255 pixels, NHWC, centre crop 87.5%. */
const EFFICIENTNET_LITE_NORM = { mean: [127 / 255, 127 / 255, 127 / 255], std: [128 / 255, 128 / 255, 128 / 255] };

function onnxZoo(
  name: string,
  family: string,
  dir: string,
  file: string,
  extra: Omit<CatalogEntry, 'name' | 'family' | 'format' | 'files' | 'homepage' | 'license' | 'labels' | 'preprocess' | 'description'> & {
    description: string;
    preprocess?: PreprocessSpec;
    license?: string;
  },
): CatalogEntry {
  return {
    name,
    family,
    format: 'onnx',
    files: [{ name: file, urls: [`${ONNX_ZOO}/${dir}/model/${file}`] }],
    homepage: `https://github.com/onnx/models/tree/main/validated/vision/classification/${dir}`,
    license: extra.license ?? 'Apache-2.0',
    labels: 'imagenet-1000',
    preprocess: extra.preprocess ?? GLUON,
    ...extra,
  };
}

/** MobileNet v1 as TF.js published it (Keras 2.1.4 export, layers format): 4 widths x 4 input sizes. */
const MOBILENET_V1_MACS: Record<string, Record<number, number>> = {
  '0.25': { 128: 14e6, 160: 21e6, 192: 34e6, 224: 41e6 },
  '0.50': { 128: 49e6, 160: 77e6, 192: 110e6, 224: 150e6 },
  '0.75': { 128: 104e6, 160: 162e6, 192: 233e6, 224: 317e6 },
  '1.0': { 128: 186e6, 160: 291e6, 192: 418e6, 224: 569e6 },
};
const MOBILENET_V1_PARAMS: Record<string, number> = { '0.25': 0.47e6, '0.50': 1.34e6, '0.75': 2.59e6, '1.0': 4.24e6 };
const MOBILENET_V1_BYTES: Record<string, number> = { '0.25': 1.9e6, '0.50': 5.4e6, '0.75': 10.5e6, '1.0': 16.9e6 };

function mobilenetV1Tfjs(width: string, size: number): CatalogEntry {
  const name = `mobilenet_v1_${width}_${size}`;
  const known = name === 'mobilenet_v1_0.75_224' ? MOBILENET_V1_075_224_TFJS_FILES : undefined;
  const base = `${TFJS_STORAGE}/${name}`;
  return {
    name,
    family: 'mobilenet_v1',
    description: `MobileNet v1, width ${width}, ${size}x${size}, ImageNet (TF.js layers model)`,
    format: 'tfjs-layers',
    files: known
      ? known.map(([file, bytes, sha256]) => ({ name: file, urls: [`${base}/${file}`], size: bytes, sha256 }))
      : [{ name: 'model.json', urls: [`${base}/model.json`] }],
    homepage: 'https://github.com/tensorflow/tfjs-models/tree/master/mobilenet',
    license: 'Apache-2.0',
    // TF.js MobileNet: the whole image resized to the input size, RGB scaled to [-1, 1], NHWC.
    preprocess: spec(size, RANGE_MINUS1_1, 'NHWC', null),
    labels: 'imagenet-1000',
    // Explicit Keras layer names; the pooling layer's name is auto-generated, so it is only given where checked.
    featureNode: known ? 'global_average_pooling2d_1' : undefined,
    classifierNode: 'conv_preds',
    params: MOBILENET_V1_PARAMS[width],
    macs: MOBILENET_V1_MACS[width]![size],
    approxBytes: Math.round(MOBILENET_V1_BYTES[width]!),
  };
}

/** TF Hub's TF.js conversions (graph models): served from TF Hub's storage bucket, or via tfhub.dev. */
function tfhubGraph(path: string): CatalogFile[] {
  return [{ name: 'model.json', urls: [`${TFHUB_GCS}/${path}/model.json`, `${TFHUB}/${path}/model.json?tfjs-format=file`] }];
}

function buildCatalog(): CatalogEntry[] {
  const entries: CatalogEntry[] = [
    onnxZoo('vgg16', 'vgg', 'vgg', 'vgg16-7.onnx', {
      description: 'VGG-16, ImageNet (ONNX model zoo, MXNet/Gluon export, opset 7)',
      classifierNode: 'vgg0_dense2_fwd',
      params: 138.4e6,
      macs: 15.5e9,
      approxBytes: 553.4e6,
    }),
    onnxZoo('vgg19', 'vgg', 'vgg', 'vgg19-7.onnx', {
      description: 'VGG-19, ImageNet (ONNX model zoo, MXNet/Gluon export, opset 7)',
      params: 143.7e6,
      macs: 19.6e9,
      approxBytes: 574.7e6,
    }),
    onnxZoo('resnet18', 'resnet', 'resnet', 'resnet18-v1-7.onnx', {
      description: 'ResNet-18 v1, ImageNet (ONNX model zoo, MXNet/Gluon export, opset 7)',
      params: 11.7e6,
      macs: 1.8e9,
      approxBytes: 46.8e6,
    }),
    onnxZoo('resnet50', 'resnet', 'resnet', 'resnet50-v1-12.onnx', {
      description: 'ResNet-50 v1, ImageNet (ONNX model zoo, MXNet/Gluon export, opset 12)',
      classifierNode: 'resnetv17_dense0_fwd',
      params: 25.6e6,
      macs: 4.1e9,
      approxBytes: 102.6e6,
    }),
    onnxZoo('resnet50_v2', 'resnet', 'resnet', 'resnet50-v2-7.onnx', {
      description: 'ResNet-50 v2 (pre-activation), ImageNet (ONNX model zoo, MXNet/Gluon export, opset 7)',
      classifierNode: 'resnetv24_dense0_fwd',
      params: 25.6e6,
      macs: 4.1e9,
      approxBytes: 102.4e6,
    }),
    onnxZoo('resnet101', 'resnet', 'resnet', 'resnet101-v1-7.onnx', {
      description: 'ResNet-101 v1, ImageNet (ONNX model zoo, MXNet/Gluon export, opset 7)',
      params: 44.5e6,
      macs: 7.8e9,
      approxBytes: 178.9e6,
    }),
    onnxZoo('mobilenet_v2_1.0_224', 'mobilenet_v2', 'mobilenet', 'mobilenetv2-7.onnx', {
      description: 'MobileNet v2, width 1.0, 224x224, ImageNet (ONNX model zoo, MXNet/Gluon export, opset 7)',
      classifierNode: 'mobilenetv20_output_flatten0_reshape0',
      params: 3.5e6,
      macs: 300e6,
      approxBytes: 14.2e6,
    }),
    onnxZoo('efficientnet_lite4', 'efficientnet_lite', 'efficientnet-lite4', 'efficientnet-lite4-11.onnx', {
      description: 'EfficientNet-Lite4, ImageNet (ONNX model zoo, converted from TensorFlow, opset 11; outputs probabilities)',
      license: 'MIT',
      preprocess: spec(224, EFFICIENTNET_LITE_NORM, 'NHWC', 0.875),
      classifierNode: 'Softmax:0',
      params: 13.0e6,
      approxBytes: 51.9e6,
    }),
  ];

  for (const width of ['0.25', '0.50', '0.75', '1.0']) for (const size of [128, 160, 192, 224]) entries.push(mobilenetV1Tfjs(width, size));

  entries.push(
    {
      name: 'mobilenet_v1_0.25_224_tflite',
      family: 'mobilenet_v1',
      description: 'MobileNet v1, width 0.25, 224x224, float32, 1001 classes (TFLite, TF Hub lite-model release)',
      format: 'tflite',
      files: [
        {
          name: 'mobilenet_v1_0.25_224.tflite',
          urls: [
            // The TF Hub lite-model file as MediaPipe pins it (same bytes: the checksum is the one MediaPipe publishes).
            'https://storage.googleapis.com/mediapipe-assets/mobilenet_v1_0.25_224_1_default_1.tflite?generation=1661875824782010',
            'https://tfhub.dev/tensorflow/lite-model/mobilenet_v1_0.25_224/1/default/1?lite-format=tflite',
          ],
          size: 1882904,
          sha256: '446ec673881cd46371a8726075b714194ada39d144762260cb76d15318597df7',
        },
      ],
      homepage: 'https://tfhub.dev/tensorflow/lite-model/mobilenet_v1_0.25_224/1/default/1',
      license: 'Apache-2.0',
      preprocess: spec(224, RANGE_MINUS1_1, 'NHWC', 0.875),
      labels: 'imagenet-1001',
      params: 0.47e6,
      macs: 41e6,
    },
    {
      name: 'mobilenet_v2_1.0_224_quant',
      family: 'mobilenet_v2',
      description: 'MobileNet v2, width 1.0, 224x224, uint8 quantised, 1001 classes (TFLite, Coral release)',
      format: 'tflite',
      files: [
        {
          name: 'mobilenet_v2_1.0_224_quant.tflite',
          urls: [
            'https://raw.githubusercontent.com/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41/mobilenet_v2_1.0_224_quant.tflite',
            'https://github.com/google-coral/test_data/raw/master/mobilenet_v2_1.0_224_quant.tflite',
          ],
          size: 3610798,
          sha256: '7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776',
        },
      ],
      homepage: 'https://github.com/google-coral/test_data',
      license: 'Apache-2.0',
      // uint8 input: the raw 0-255 pixel values.
      preprocess: spec(224, RANGE_0_255, 'NHWC', 0.875),
      labels: 'imagenet-1001',
      params: 3.47e6,
      macs: 300e6,
    },
    {
      name: 'mobilenet_v2_0.50_96_feature_vector',
      family: 'mobilenet_v2',
      description: 'MobileNet v2, width 0.5, 96x96, ImageNet feature vector (1280-d, no classifier; TF Hub TF.js graph model)',
      format: 'tfjs-graph',
      files: tfhubGraph('mobilenet_v2_050_96/feature_vector/3/default/1'),
      homepage: 'https://tfhub.dev/google/tfjs-model/imagenet/mobilenet_v2_050_96/feature_vector/3/default/1',
      license: 'Apache-2.0',
      preprocess: spec(96, RANGE_0_1, 'NHWC', 0.875),
      labels: 'none',
      macs: 11e6,
      approxBytes: 2.8e6,
    },
    {
      name: 'mobilenet_v3_small_1.0_224',
      family: 'mobilenet_v3',
      description: 'MobileNet v3 Small, width 1.0, 224x224, 1001 classes (TF Hub TF.js graph model)',
      format: 'tfjs-graph',
      files: tfhubGraph('mobilenet_v3_small_100_224/classification/5/default/1'),
      homepage: 'https://tfhub.dev/google/tfjs-model/imagenet/mobilenet_v3_small_100_224/classification/5/default/1',
      license: 'Apache-2.0',
      preprocess: spec(224, RANGE_0_1, 'NHWC', 0.875),
      labels: 'imagenet-1001',
      params: 2.5e6,
      macs: 56e6,
      approxBytes: 10e6,
    },
    {
      name: 'mobilenet_v3_large_1.0_224',
      family: 'mobilenet_v3',
      description: 'MobileNet v3 Large, width 1.0, 224x224, 1001 classes (TF Hub TF.js graph model)',
      format: 'tfjs-graph',
      files: tfhubGraph('mobilenet_v3_large_100_224/classification/5/default/1'),
      homepage: 'https://tfhub.dev/google/tfjs-model/imagenet/mobilenet_v3_large_100_224/classification/5/default/1',
      license: 'Apache-2.0',
      preprocess: spec(224, RANGE_0_1, 'NHWC', 0.875),
      labels: 'imagenet-1001',
      params: 5.4e6,
      macs: 219e6,
      approxBytes: 22e6,
    },
    {
      name: 'efficientnet_lite0',
      family: 'efficientnet_lite',
      description: 'EfficientNet-Lite0, 224x224, float32, ImageNet (TFLite, MediaPipe image classifier release)',
      format: 'tflite',
      files: [
        {
          name: 'efficientnet_lite0.tflite',
          urls: ['https://storage.googleapis.com/mediapipe-models/image_classifier/efficientnet_lite0/float32/1/efficientnet_lite0.tflite'],
        },
      ],
      homepage: 'https://ai.google.dev/edge/mediapipe/solutions/vision/image_classifier',
      license: 'Apache-2.0',
      preprocess: spec(224, EFFICIENTNET_LITE_NORM, 'NHWC', 0.875),
      labels: 'imagenet-1000',
      params: 4.7e6,
      approxBytes: 18.6e6,
    },
  );
  return entries;
}

const ENTRIES: readonly CatalogEntry[] = buildCatalog();
const BY_NAME = new Map(ENTRIES.map((e) => [e.name, e]));

/** Every catalog entry, in listing order. */
export function catalogEntries(): readonly CatalogEntry[] {
  return ENTRIES;
}

/** The entry called `name` (case-insensitive), or undefined. */
export function findEntry(name: string): CatalogEntry | undefined {
  return BY_NAME.get(name) ?? BY_NAME.get(name.toLowerCase());
}

/** Could `s` be meant as a catalog name (rather than a file path or URL)? */
export function looksLikeName(s: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(s) && !/\.(onnx|json|tflite|pb|h5)$/i.test(s);
}

/** Catalog names close to `name`, best first (for "unknown model" messages). Separators and case do not count. */
export function closeMatches(name: string, max = 5): string[] {
  const norm = (x: string) => x.toLowerCase().replace(/[^a-z0-9]/g, '');
  const q = norm(name);
  if (!q) return [];
  const scored = ENTRIES.map((e) => {
    const n = norm(e.name);
    let score = editDistance(q, n);
    if (n.includes(q) || q.includes(n)) score = Math.min(score, 1 + Math.abs(n.length - q.length) / 10);
    return { name: e.name, score };
  });
  const limit = Math.max(3, q.length * 0.4);
  return scored
    .filter((s) => s.score <= limit)
    .sort((a, b) => a.score - b.score || a.name.localeCompare(b.name))
    .slice(0, max)
    .map((s) => s.name);
}

/** A short human size: "10.5 MB". */
export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n} B`;
}

/** The entry's download size: exact when every file's size is known (for TF.js: when the shards are listed too). */
export function entryBytes(e: CatalogEntry): { bytes?: number; exact: boolean } {
  const tfjsShardsUnlisted = (e.format === 'tfjs-layers' || e.format === 'tfjs-graph') && e.files.length === 1;
  if (!tfjsShardsUnlisted && e.files.every((f) => f.size !== undefined)) return { bytes: e.files.reduce((s, f) => s + f.size!, 0), exact: true };
  return { bytes: e.approxBytes, exact: false };
}
