// Unpickles the data.pkl of a torch.save archive without running any Python semantics beyond what tensors need.
// Tensors come back as lazy references (storage key, offset, shape, stride) so a checkpoint's optimizer state or EMA
// copies cost nothing unless asked for. Classes we do not know become inert PickledObject records: Lightning
// checkpoints carry arbitrary hyper-parameter objects, and refusing them would refuse every real checkpoint.
import { Parser } from 'pickleparser';
import type { ElementType } from './dtypes.ts';

/** A storage type or dtype named in the pickle. `type` is null for formats we cannot decode (complex, quantized). */
export class TorchTypeName {
  constructor(readonly qualname: string, readonly type: ElementType | null) {}
}

export interface TorchStorageRef {
  readonly kind: 'storage';
  key: string;
  storageType: TorchTypeName;
  location: string;
  /** Elements of storageType (bytes for untyped storages). */
  numel: number;
}

export interface TorchTensorRef {
  readonly kind: 'tensor';
  storage: TorchStorageRef;
  /** Element type of the tensor (the storage's, unless _rebuild_tensor_v3 named another dtype). */
  dtype: TorchTypeName;
  offset: number;
  shape: number[];
  stride: number[];
}

/** A tensor saved by a rebuild function we do not support (sparse, quantized, nested, meta...). */
export class UnsupportedTensor {
  constructor(readonly rebuild: string) {}
}

/** Any other object of a class rebuilt by the pickle (kept only to name it in error messages). */
export class PickledObject {
  state: unknown = undefined;
  constructor(readonly qualname: string, readonly args: unknown[]) {}
  __setstate__(state: unknown): void {
    this.state = state;
  }
}

export function isTensorRef(x: unknown): x is TorchTensorRef {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'tensor' && 'storage' in x;
}

/** Short description of a pickled value, for error messages. */
export function describePickled(x: unknown): string {
  if (x === null) return 'None';
  if (x instanceof PickledObject) return `a ${x.qualname} object`;
  if (x instanceof UnsupportedTensor) return `a tensor saved with ${x.rebuild} (not supported)`;
  if (x instanceof TorchTypeName) return x.qualname;
  if (typeof x === 'function') return typeNameOf(x)?.qualname ?? 'a function';
  if (x instanceof Map) return 'a dict';
  if (Array.isArray(x)) return 'a list/tuple';
  if (isTensorRef(x)) return 'a tensor';
  return `a ${typeof x}`;
}

const STORAGE_TYPES: Record<string, ElementType | null> = {
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16', LongStorage: 'I64',
  IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
  UntypedStorage: 'U8', ComplexFloatStorage: null, ComplexDoubleStorage: null, QInt8Storage: null, QUInt8Storage: null,
  QInt32Storage: null, QUInt4x2Storage: null, QUInt2x4Storage: null,
};

const DTYPES: Record<string, ElementType | null> = {
  float32: 'F32', float: 'F32', float64: 'F64', double: 'F64', float16: 'F16', half: 'F16', bfloat16: 'BF16',
  int64: 'I64', long: 'I64', int32: 'I32', int: 'I32', int16: 'I16', short: 'I16', int8: 'I8', uint8: 'U8',
  bool: 'BOOL', complex64: null, complex128: null, cfloat: null, cdouble: null, float8_e4m3fn: null,
  float8_e5m2: null, uint16: null, uint32: null, uint64: null,
};

type Fn = (...args: unknown[]) => unknown;

function toIntList(x: unknown, what: string): number[] {
  const arr = x instanceof PickledObject && x.qualname === 'torch.Size' ? x.args[0] : x;
  if (!Array.isArray(arr) || !arr.every((v) => Number.isSafeInteger(v))) {
    throw new Error(`${what} is not a tuple of integers: ${describePickled(x)}`);
  }
  return arr as number[];
}

function tensorRef(storage: unknown, offset: unknown, size: unknown, stride: unknown, dtype?: unknown): TorchTensorRef {
  const s = storage as TorchStorageRef;
  if (!s || s.kind !== 'storage') throw new Error(`tensor rebuild got ${describePickled(storage)} instead of a storage`);
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw new Error(`tensor storage offset ${String(offset)} is invalid`);
  const shape = toIntList(size, 'tensor size');
  const strides = toIntList(stride, 'tensor stride');
  if (shape.length !== strides.length) throw new Error(`tensor size [${shape}] and stride [${strides}] differ in length`);
  let dt = s.storageType;
  if (dtype !== undefined) {
    const named = typeNameOf(dtype);
    if (!named) throw new Error(`tensor dtype is ${describePickled(dtype)}, not a torch dtype`);
    dt = named;
  }
  return { kind: 'tensor', storage: s, dtype: dt, offset: offset as number, shape, stride: strides };
}

function resolveName(module: string, name: string): Fn {
  const q = `${module}.${name}`;
  switch (q) {
    case 'collections.OrderedDict':
      // Called with no arguments (then filled by SETITEMS) or, in old protocols, with a list of pairs.
      return function orderedDict(...args: unknown[]) {
        return new Map(Array.isArray(args[0]) ? (args[0] as Array<[unknown, unknown]>) : []);
      };
    case 'torch._utils._rebuild_tensor':
    case 'torch._utils._rebuild_tensor_v2':
      return function rebuildTensor(storage, offset, size, stride) {
        return tensorRef(storage, offset, size, stride);
      };
    case 'torch._utils._rebuild_tensor_v3':
      // (storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata]): dtypes without a legacy
      // storage class are saved on an untyped (byte) storage with the dtype named here.
      return function rebuildTensorV3(storage, offset, size, stride, _rg, _hooks, dtype) {
        return tensorRef(storage, offset, size, stride, dtype);
      };
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      return function rebuildParameter(data) {
        return data;
      };
    case 'torch._tensor._rebuild_from_type':
    case 'torch._tensor._rebuild_from_type_v2':
      // (func, subclass, args, state): a Tensor subclass; the data is whatever func(*args) rebuilds.
      return function rebuildFromType(func, _type, args) {
        if (typeof func !== 'function' || !Array.isArray(args)) throw new Error(`${q}: unexpected arguments`);
        return (func as Fn)(...args);
      };
    default:
      break;
  }
  if (module === 'torch' || module === 'torch.storage') {
    if (name in STORAGE_TYPES) {
      const t = new TorchTypeName(q, STORAGE_TYPES[name]);
      return Object.assign(function storageType() {
        return t;
      }, { typeName: t });
    }
    if (name in DTYPES) {
      const t = new TorchTypeName(q, DTYPES[name]);
      return Object.assign(function dtype() {
        return t;
      }, { typeName: t });
    }
  }
  if (module === 'torch._utils' && name.startsWith('_rebuild_')) {
    return function unsupportedRebuild() {
      return new UnsupportedTensor(q);
    };
  }
  // Works both when REDUCE calls it and when NEWOBJ constructs it: a function returning an object does both.
  return function opaque(...args: unknown[]) {
    return new PickledObject(q, args);
  };
}

/** Storage/dtype names resolve to functions (pickle needs callables); this unwraps them to their TorchTypeName. */
function typeNameOf(x: unknown): TorchTypeName | null {
  if (x instanceof TorchTypeName) return x;
  if (typeof x === 'function' && (x as { typeName?: unknown }).typeName instanceof TorchTypeName) {
    return (x as unknown as { typeName: TorchTypeName }).typeName;
  }
  return null;
}

/**
 * Parses a torch.save pickle. Persistent ids ('storage', type, key, location, numel) become TorchStorageRef (one per
 * key, shared by every tensor that views it). Throws with the entry name and the failing opcode or class.
 */
export function unpickleTorch(bytes: Uint8Array, where: string): unknown {
  const storages = new Map<string, TorchStorageRef>();
  const parser = new Parser({
    unpicklingTypeOfDictionary: 'Map',
    unpicklingTypeOfSet: 'array',
    nameResolver: { resolve: resolveName },
    persistentResolver: {
      resolve(pid: unknown) {
        if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
          throw new Error(`unsupported persistent id ${JSON.stringify(pid)} (expected ('storage', type, key, ` +
            'location, numel))');
        }
        const [, st, key, location, numel] = pid as unknown[];
        const storageType = typeNameOf(st);
        if (!storageType) throw new Error(`storage '${String(key)}' has type ${describePickled(st)}, not a torch storage type`);
        if (!Number.isSafeInteger(numel) || (numel as number) < 0) throw new Error(`storage '${String(key)}' has invalid size`);
        const k = String(key);
        let ref = storages.get(k);
        if (!ref) {
          ref = { kind: 'storage', key: k, storageType, location: String(location), numel: numel as number };
          storages.set(k, ref);
        }
        return ref;
      },
    },
  });
  try {
    return parser.parse(bytes);
  } catch (e) {
    let msg = (e as Error).message;
    const m = /Unsupported opcode '(\d+)'/.exec(msg);
    if (m) {
      const code = Number(m[1]);
      const printable = code >= 32 && code < 127 ? ` ('${String.fromCharCode(code)}')` : '';
      msg = `unsupported pickle opcode 0x${code.toString(16).padStart(2, '0')}${printable} (truncated or not a pickle?)`;
    }
    throw new Error(`${where}: cannot unpickle: ${msg}`);
  }
}
