export {
  compareBytes,
  type DatasetItem,
  type Discovery,
  findImages,
  IMAGE_EXTENSIONS,
  isIgnoredName,
  isImageFileName,
  type Skipped,
} from './files.js';
export {
  compareCaseInsensitive,
  type Dataset,
  datasetFromFiles,
  detectLayout,
  LAYOUT_NAMES,
  type LayoutName,
  openDataset,
  type OpenDatasetOptions,
  petBreedFromName,
  petSpeciesOfBreed,
  readPetList,
} from './layouts.js';
export { stratifiedSplit } from './split.js';
