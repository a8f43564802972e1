import { ByteBuffer } from 'flatbuffers';

/**
 * A minimal reader for TFLite model files (FlatBuffers, file identifier "TFL3"), on the `flatbuffers` runtime.
 *
 * Hand-written for exactly the tables and fields graft's importer needs. Field ids follow TFLite's `schema.fbs`
 * (namespace tflite; new fields are only ever appended, so ids are stable across schema versions). A field's
 * vtable slot is 4 + 2 * id; a union field takes two ids (its `_type` byte, then the table).
 *
 * Every offset is checked against the buffer, so garbage or truncated bytes raise `TfliteFormatError` instead of
 * reading past the end (the runtime itself does not check).
 *
 * A table of the schema (operator names, option tables, field ids) rather than logic, so it stays one file past the
 * usual size of a module: split, its field ids would no longer be read side by side with schema.fbs.
 */

export class TfliteFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TfliteFormatError';
  }
}

/** tflite.TensorType */
export const TensorType = {
  FLOAT32: 0,
  FLOAT16: 1,
  INT32: 2,
  UINT8: 3,
  INT64: 4,
  STRING: 5,
  BOOL: 6,
  INT16: 7,
  COMPLEX64: 8,
  INT8: 9,
  FLOAT64: 10,
} as const;
export const TENSOR_TYPE_NAMES = Object.fromEntries(Object.entries(TensorType).map(([k, v]) => [v, k])) as Record<number, string>;

/** tflite.BuiltinOperator, in enum order (value = index). */
export const BUILTIN_OPERATOR_NAMES: readonly string[] = [
  'ADD', 'AVERAGE_POOL_2D', 'CONCATENATION', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'DEPTH_TO_SPACE', 'DEQUANTIZE',
  'EMBEDDING_LOOKUP', 'FLOOR', 'FULLY_CONNECTED', 'HASHTABLE_LOOKUP', 'L2_NORMALIZATION', 'L2_POOL_2D',
  'LOCAL_RESPONSE_NORMALIZATION', 'LOGISTIC', 'LSH_PROJECTION', 'LSTM', 'MAX_POOL_2D', 'MUL', 'RELU', 'RELU_N1_TO_1',
  'RELU6', 'RESHAPE', 'RESIZE_BILINEAR', 'RNN', 'SOFTMAX', 'SPACE_TO_DEPTH', 'SVDF', 'TANH', 'CONCAT_EMBEDDINGS',
  'SKIP_GRAM', 'CALL', 'CUSTOM', 'EMBEDDING_LOOKUP_SPARSE', 'PAD', 'UNIDIRECTIONAL_SEQUENCE_RNN', 'GATHER',
  'BATCH_TO_SPACE_ND', 'SPACE_TO_BATCH_ND', 'TRANSPOSE', 'MEAN', 'SUB', 'DIV', 'SQUEEZE',
  'UNIDIRECTIONAL_SEQUENCE_LSTM', 'STRIDED_SLICE', 'BIDIRECTIONAL_SEQUENCE_RNN', 'EXP', 'TOPK_V2', 'SPLIT',
  'LOG_SOFTMAX', 'DELEGATE', 'BIDIRECTIONAL_SEQUENCE_LSTM', 'CAST', 'PRELU', 'MAXIMUM', 'ARG_MAX', 'MINIMUM', 'LESS',
  'NEG', 'PADV2', 'GREATER', 'GREATER_EQUAL', 'LESS_EQUAL', 'SELECT', 'SLICE', 'SIN', 'TRANSPOSE_CONV',
  'SPARSE_TO_DENSE', 'TILE', 'EXPAND_DIMS', 'EQUAL', 'NOT_EQUAL', 'LOG', 'SUM', 'SQRT', 'RSQRT', 'SHAPE', 'POW',
  'ARG_MIN', 'FAKE_QUANT', 'REDUCE_PROD', 'REDUCE_MAX', 'PACK', 'LOGICAL_OR', 'ONE_HOT', 'LOGICAL_AND', 'LOGICAL_NOT',
  'UNPACK', 'REDUCE_MIN', 'FLOOR_DIV', 'REDUCE_ANY', 'SQUARE', 'ZEROS_LIKE', 'FILL', 'FLOOR_MOD', 'RANGE',
  'RESIZE_NEAREST_NEIGHBOR', 'LEAKY_RELU', 'SQUARED_DIFFERENCE', 'MIRROR_PAD', 'ABS', 'SPLIT_V', 'UNIQUE', 'CEIL',
  'REVERSE_V2', 'ADD_N', 'GATHER_ND', 'COS', 'WHERE', 'RANK', 'ELU', 'REVERSE_SEQUENCE', 'MATRIX_DIAG', 'QUANTIZE',
  'MATRIX_SET_DIAG', 'ROUND', 'HARD_SWISH', 'IF', 'WHILE', 'NON_MAX_SUPPRESSION_V4', 'NON_MAX_SUPPRESSION_V5',
  'SCATTER_ND', 'SELECT_V2', 'DENSIFY', 'SEGMENT_SUM', 'BATCH_MATMUL', 'PLACEHOLDER_FOR_GREATER_OP_CODES', 'CUMSUM',
  'CALL_ONCE', 'BROADCAST_TO', 'RFFT2D', 'CONV_3D', 'IMAG', 'REAL', 'COMPLEX_ABS', 'HASHTABLE', 'HASHTABLE_FIND',
  'HASHTABLE_IMPORT', 'HASHTABLE_SIZE', 'REDUCE_ALL', 'CONV_3D_TRANSPOSE', 'VAR_HANDLE', 'READ_VARIABLE',
  'ASSIGN_VARIABLE', 'BROADCAST_ARGS', 'RANDOM_STANDARD_NORMAL', 'BUCKETIZE', 'RANDOM_UNIFORM', 'MULTINOMIAL', 'GELU',
  'DYNAMIC_UPDATE_SLICE', 'RELU_0_TO_1', 'UNSORTED_SEGMENT_PROD', 'UNSORTED_SEGMENT_MAX', 'UNSORTED_SEGMENT_SUM',
  'ATAN2', 'UNSORTED_SEGMENT_MIN',
];
export const BuiltinOperator = Object.fromEntries(BUILTIN_OPERATOR_NAMES.map((n, i) => [n, i])) as Record<string, number>;
export const PLACEHOLDER_FOR_GREATER_OP_CODES = 127;

export function builtinOperatorName(code: number): string {
  return BUILTIN_OPERATOR_NAMES[code] ?? `builtin operator ${code}`;
}

/** tflite.BuiltinOptions union members used here (value = position in the union, NONE = 0). */
export const BuiltinOptions = {
  NONE: 0,
  Conv2DOptions: 1,
  DepthwiseConv2DOptions: 2,
  Pool2DOptions: 5,
  FullyConnectedOptions: 8,
  SoftmaxOptions: 9,
  ConcatenationOptions: 10,
  AddOptions: 11,
  ReshapeOptions: 17,
  MulOptions: 21,
  PadOptions: 22,
  ReducerOptions: 27,
  SubOptions: 28,
  DivOptions: 29,
  SqueezeOptions: 30,
} as const;

/** tflite.Padding */
export const Padding = { SAME: 0, VALID: 1 } as const;
/** tflite.ActivationFunctionType */
export const ActivationFunctionType = { NONE: 0, RELU: 1, RELU_N1_TO_1: 2, RELU6: 3, TANH: 4, SIGN_BIT: 5 } as const;

/** Bounds-checked access to one FlatBuffers table. */
class Table {
  constructor(
    protected readonly bb: ByteBuffer,
    protected readonly pos: number,
    protected readonly what: string,
  ) {
    const cap = bb.capacity();
    if (pos < 0 || pos + 4 > cap) throw new TfliteFormatError(`${what}: table offset ${pos} is outside the file (${cap} bytes)`);
    const vt = pos - bb.readInt32(pos);
    if (vt < 0 || vt + 4 > cap) throw new TfliteFormatError(`${what}: vtable offset ${vt} is outside the file`);
    const vtLen = bb.readUint16(vt);
    const objLen = bb.readUint16(vt + 2);
    if (vtLen < 4 || vt + vtLen > cap || pos + objLen > cap) throw new TfliteFormatError(`${what}: corrupt vtable`);
  }

  /** Offset of field `id` inside the table (0 when absent), checked to hold `size` bytes. */
  protected field(id: number, size = 4): number {
    const o = this.bb.__offset(this.pos, 4 + 2 * id);
    if (o && this.pos + o + size > this.bb.capacity()) throw new TfliteFormatError(`${this.what}: field ${id} is outside the file`);
    return o;
  }

  protected int8(id: number, def = 0): number {
    const o = this.field(id, 1);
    return o ? this.bb.readInt8(this.pos + o) : def;
  }

  protected uint8(id: number, def = 0): number {
    const o = this.field(id, 1);
    return o ? this.bb.readUint8(this.pos + o) : def;
  }

  protected int32(id: number, def = 0): number {
    const o = this.field(id, 4);
    return o ? this.bb.readInt32(this.pos + o) : def;
  }

  protected uint32(id: number, def = 0): number {
    const o = this.field(id, 4);
    return o ? this.bb.readUint32(this.pos + o) : def;
  }

  protected uint64(id: number, def = 0n): bigint {
    const o = this.field(id, 8);
    return o ? this.bb.readUint64(this.pos + o) : def;
  }

  protected float32(id: number, def = 0): number {
    const o = this.field(id, 4);
    return o ? this.bb.readFloat32(this.pos + o) : def;
  }

  protected bool(id: number, def = false): boolean {
    const o = this.field(id, 1);
    return o ? Boolean(this.bb.readInt8(this.pos + o)) : def;
  }

  /** Position of a referenced table (field `id`), or undefined when absent. */
  protected tablePos(id: number): number | undefined {
    const o = this.field(id, 4);
    return o ? this.bb.__indirect(this.pos + o) : undefined;
  }

  protected string(id: number): string | undefined {
    const v = this.vector(id, 1);
    if (!v) return undefined;
    return new TextDecoder().decode(this.bb.bytes().subarray(v.start, v.start + v.length));
  }

  /** A vector field: position of its first element and its length, checked to fit in the file. */
  protected vector(id: number, elemSize: number): { start: number; length: number } | undefined {
    const o = this.field(id, 4);
    if (!o) return undefined;
    const at = this.pos + o;
    const vec = at + this.bb.readUint32(at);
    if (vec + 4 > this.bb.capacity()) throw new TfliteFormatError(`${this.what}: vector ${id} is outside the file`);
    const length = this.bb.readUint32(vec);
    const start = vec + 4;
    if (start + length * elemSize > this.bb.capacity()) throw new TfliteFormatError(`${this.what}: vector ${id} (${length} elements) runs past the end of the file (truncated?)`);
    return { start, length };
  }

  /** Check that vector field `id` (elements of `elemSize` bytes), when present, lies inside the file. */
  check(id: number, elemSize: number): void {
    this.vector(id, elemSize);
  }

  protected int32s(id: number): number[] {
    const v = this.vector(id, 4);
    return v ? Array.from({ length: v.length }, (_, i) => this.bb.readInt32(v.start + 4 * i)) : [];
  }

  protected float32s(id: number): number[] {
    const v = this.vector(id, 4);
    return v ? Array.from({ length: v.length }, (_, i) => this.bb.readFloat32(v.start + 4 * i)) : [];
  }

  protected int64s(id: number): bigint[] {
    const v = this.vector(id, 8);
    return v ? Array.from({ length: v.length }, (_, i) => this.bb.readInt64(v.start + 8 * i)) : [];
  }

  /** A vector of tables, read lazily. */
  protected tables<T>(id: number, make: (pos: number, i: number) => T): T[] {
    const v = this.vector(id, 4);
    if (!v) return [];
    return Array.from({ length: v.length }, (_, i) => make(this.bb.__indirect(v.start + 4 * i), i));
  }
}

/** table QuantizationParameters { min:[float]; max:[float]; scale:[float]; zero_point:[long]; details:QuantizationDetails (union: ids 4, 5); quantized_dimension:int; } */
export class QuantizationParameters extends Table {
  get scale(): number[] {
    return this.float32s(2);
  }
  get zeroPoint(): number[] {
    return this.int64s(3).map(Number);
  }
  get detailsType(): number {
    return this.uint8(4);
  }
  get quantizedDimension(): number {
    return this.int32(6);
  }
}

/** table Tensor { shape:[int]; type:TensorType; buffer:uint; name:string; quantization:QuantizationParameters; is_variable:bool; sparsity; shape_signature:[int]; } */
export class Tensor extends Table {
  get shape(): number[] {
    return this.int32s(0);
  }
  get type(): number {
    return this.int8(1);
  }
  get buffer(): number {
    return this.uint32(2);
  }
  get name(): string {
    return this.string(3) ?? '';
  }
  get quantization(): QuantizationParameters | undefined {
    const p = this.tablePos(4);
    return p === undefined ? undefined : new QuantizationParameters(this.bb, p, `${this.what}.quantization`);
  }
  /** Touch the fields not otherwise read (min/max, shape_signature), so that a truncated file fails here. */
  checkExtents(): void {
    const q = this.quantization;
    if (q) {
      q.check(0, 4);
      q.check(1, 4);
    }
    this.check(7, 4);
  }
  get isVariable(): boolean {
    return this.bool(5);
  }
  get hasSparsity(): boolean {
    return this.field(6) !== 0;
  }
}

/** table OperatorCode { deprecated_builtin_code:byte; custom_code:string; version:int = 1; builtin_code:BuiltinOperator (int32); } */
export class OperatorCode extends Table {
  /** The builtin operator: the larger of the old byte field and the newer int32 field (as TFLite itself reads it). */
  get builtinCode(): number {
    return Math.max(this.int8(0), this.int32(3));
  }
  get customCode(): string | undefined {
    return this.string(1);
  }
  get version(): number {
    return this.int32(2, 1);
  }
}

/** table Operator { opcode_index:uint; inputs:[int]; outputs:[int]; builtin_options:BuiltinOptions (union: ids 3, 4); custom_options:[ubyte]; ... } */
export class Operator extends Table {
  get opcodeIndex(): number {
    return this.uint32(0);
  }
  get inputs(): number[] {
    return this.int32s(1);
  }
  get outputs(): number[] {
    return this.int32s(2);
  }
  get builtinOptionsType(): number {
    return this.uint8(3);
  }
  /** The builtin options table; `expected` is its union member, checked when the file says which one it is. */
  options<T>(expected: number, make: new (bb: ByteBuffer, pos: number, what: string) => T): T | undefined {
    const type = this.builtinOptionsType;
    if (type !== BuiltinOptions.NONE && type !== expected) throw new TfliteFormatError(`${this.what}: builtin options of type ${type}, expected ${expected}`);
    const p = this.tablePos(4);
    return p === undefined ? undefined : new make(this.bb, p, `${this.what}.builtin_options`);
  }
}

/** table Conv2DOptions { padding:Padding; stride_w:int; stride_h:int; fused_activation_function; dilation_w_factor:int = 1; dilation_h_factor:int = 1; } */
export class Conv2DOptions extends Table {
  get padding(): number {
    return this.int8(0);
  }
  get strideW(): number {
    return this.int32(1);
  }
  get strideH(): number {
    return this.int32(2);
  }
  get fusedActivationFunction(): number {
    return this.int8(3);
  }
  get dilationWFactor(): number {
    return this.int32(4, 1);
  }
  get dilationHFactor(): number {
    return this.int32(5, 1);
  }
}

/** table DepthwiseConv2DOptions { padding; stride_w; stride_h; depth_multiplier:int; fused_activation_function; dilation_w_factor = 1; dilation_h_factor = 1; } */
export class DepthwiseConv2DOptions extends Table {
  get padding(): number {
    return this.int8(0);
  }
  get strideW(): number {
    return this.int32(1);
  }
  get strideH(): number {
    return this.int32(2);
  }
  get depthMultiplier(): number {
    return this.int32(3);
  }
  get fusedActivationFunction(): number {
    return this.int8(4);
  }
  get dilationWFactor(): number {
    return this.int32(5, 1);
  }
  get dilationHFactor(): number {
    return this.int32(6, 1);
  }
}

/** table Pool2DOptions { padding; stride_w; stride_h; filter_width:int; filter_height:int; fused_activation_function; } */
export class Pool2DOptions extends Table {
  get padding(): number {
    return this.int8(0);
  }
  get strideW(): number {
    return this.int32(1);
  }
  get strideH(): number {
    return this.int32(2);
  }
  get filterWidth(): number {
    return this.int32(3);
  }
  get filterHeight(): number {
    return this.int32(4);
  }
  get fusedActivationFunction(): number {
    return this.int8(5);
  }
}

/** table FullyConnectedOptions { fused_activation_function; weights_format:byte; keep_num_dims:bool; asymmetric_quantize_inputs:bool; } */
export class FullyConnectedOptions extends Table {
  get fusedActivationFunction(): number {
    return this.int8(0);
  }
  get weightsFormat(): number {
    return this.int8(1);
  }
  get keepNumDims(): boolean {
    return this.bool(2);
  }
}

/** table SoftmaxOptions { beta:float; } */
export class SoftmaxOptions extends Table {
  get beta(): number {
    return this.float32(0);
  }
}

/** table ConcatenationOptions { axis:int; fused_activation_function; } */
export class ConcatenationOptions extends Table {
  get axis(): number {
    return this.int32(0);
  }
  get fusedActivationFunction(): number {
    return this.int8(1);
  }
}

/** tables AddOptions, MulOptions, SubOptions, DivOptions { fused_activation_function; ... } */
export class ActivationOptions extends Table {
  get fusedActivationFunction(): number {
    return this.int8(0);
  }
}

/** table ReshapeOptions { new_shape:[int]; } */
export class ReshapeOptions extends Table {
  get newShape(): number[] {
    return this.int32s(0);
  }
}

/** table ReducerOptions { keep_dims:bool; } */
export class ReducerOptions extends Table {
  get keepDims(): boolean {
    return this.bool(0);
  }
}

/** table SqueezeOptions { squeeze_dims:[int]; } */
export class SqueezeOptions extends Table {
  get squeezeDims(): number[] {
    return this.int32s(0);
  }
}

/** table SubGraph { tensors:[Tensor]; inputs:[int]; outputs:[int]; operators:[Operator]; name:string; } */
export class SubGraph extends Table {
  get tensors(): Tensor[] {
    return this.tables(0, (p, i) => new Tensor(this.bb, p, `${this.what}.tensors[${i}]`));
  }
  get inputs(): number[] {
    return this.int32s(1);
  }
  get outputs(): number[] {
    return this.int32s(2);
  }
  get operators(): Operator[] {
    return this.tables(3, (p, i) => new Operator(this.bb, p, `operator ${i}`));
  }
  get name(): string {
    return this.string(4) ?? '';
  }
}

/** table Buffer { data:[ubyte]; offset:ulong; size:ulong; } (offset/size: data stored after the FlatBuffer, for files > 2 GB) */
export class ModelBuffer extends Table {
  get data(): Uint8Array {
    const v = this.vector(0, 1);
    if (v) return this.bb.bytes().subarray(v.start, v.start + v.length);
    const offset = Number(this.uint64(1));
    const size = Number(this.uint64(2));
    if (offset > 1) {
      if (offset + size > this.bb.capacity()) throw new TfliteFormatError(`${this.what}: data runs past the end of the file (truncated?)`);
      return this.bb.bytes().subarray(offset, offset + size);
    }
    return new Uint8Array(0);
  }
}

class MetadataEntry extends Table {
  get name(): string {
    return this.string(0) ?? '';
  }
}

/** table Model { version:uint; operator_codes:[OperatorCode]; subgraphs:[SubGraph]; description:string; buffers:[Buffer]; ... } (root, identifier "TFL3") */
export class Model extends Table {
  static read(bytes: Uint8Array): Model {
    if (bytes.length < 16) throw new TfliteFormatError(`only ${bytes.length} bytes: not a TFLite model`);
    const bb = new ByteBuffer(bytes);
    const id = String.fromCharCode(...bytes.subarray(4, 8));
    if (id !== 'TFL3') throw new TfliteFormatError(`file identifier is not "TFL3": not a TFLite model`);
    return new Model(bb, bb.readUint32(0), 'model');
  }

  get version(): number {
    return this.uint32(0);
  }
  get operatorCodes(): OperatorCode[] {
    return this.tables(1, (p, i) => new OperatorCode(this.bb, p, `operator_codes[${i}]`));
  }
  get subgraphs(): SubGraph[] {
    return this.tables(2, (p, i) => new SubGraph(this.bb, p, `subgraphs[${i}]`));
  }
  get description(): string {
    return this.string(3) ?? '';
  }
  get metadataBuffer(): number[] {
    return this.int32s(5);
  }
  /** table Metadata { name:string; buffer:uint; } (id 6) */
  get metadataNames(): string[] {
    return this.tables(6, (p, i) => new MetadataEntry(this.bb, p, `metadata[${i}]`)).map((m) => m.name);
  }
  /** Touch every part of the file this reader knows, so that a truncated or corrupt file fails early. */
  checkExtents(): void {
    void this.description;
    void this.metadataBuffer;
    void this.metadataNames;
    this.check(7, 4);
    for (const b of this.buffers) void b.data;
    for (const c of this.operatorCodes) void c.customCode;
    for (const sg of this.subgraphs) {
      void sg.name;
      for (const t of sg.tensors) t.checkExtents();
    }
  }
  get buffers(): ModelBuffer[] {
    return this.tables(4, (p, i) => new ModelBuffer(this.bb, p, `buffers[${i}]`));
  }
}
