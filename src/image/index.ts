export { decodeImage, DEFAULT_MAX_PIXELS, type DecodeOptions, type ImageInput, type RgbImage } from './decode.js';
export { loadImageAndTensor, loadInto, loadTensor, normaliseInto, pixelsToTensor, tensorLength } from './preprocess.js';
export { encodePng, writePng, type RawPixels } from './png.js';
export {
  defaultSpec,
  IMAGENET_MEAN_STD,
  PreprocessSpecSchema,
  RANGE_0_1,
  RANGE_0_255,
  RANGE_MINUS1_1,
  type PreprocessSpec,
} from './spec.js';
export {
  applyPixelAugment,
  augmentedViews,
  augmentKey,
  cropBox,
  DEFAULT_AUGMENT,
  describeAugment,
  flattenViews,
  loadAugmentedInto,
  loadAugmentedPixels,
  NO_AUGMENT,
  resolveAugmentOptions,
  sampleAugment,
  type AugmentOptions,
  type AugmentOptionsInput,
  type AugmentParams,
} from './augment.js';
