// A minimal protocol-2 pickle writer for crafting torch.save archives that PyTorch itself would not produce (or that
// exercise rarely used paths): unknown classes inside a state dict, unsupported rebuild functions, untyped storages.
import { zipSync } from 'fflate';

export class PickleWriter {
  private readonly out: number[] = [0x80, 0x02];

  private bytes(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.out.push(b[i]);
    return this;
  }

  op(ch: string | number): this {
    this.out.push(typeof ch === 'number' ? ch : ch.charCodeAt(0));
    return this;
  }

  str(s: string): this {
    const b = Buffer.from(s, 'utf-8');
    this.op('X');
    const n = Buffer.alloc(4);
    n.writeUInt32LE(b.length);
    return this.bytes(n).bytes(b);
  }

  int(v: number): this {
    if (v >= 0 && v < 256) return this.op('K').op(v);
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.op('J').bytes(b);
  }

  global(module: string, name: string): this {
    return this.op('c').bytes(Buffer.from(`${module}\n${name}\n`, 'ascii'));
  }

  ints(list: number[]): this {
    this.op('(');
    for (const v of list) this.int(v);
    return this.op('t');
  }

  /** Pushes an empty OrderedDict (as torch writes backward_hooks). */
  orderedDict(): this {
    return this.global('collections', 'OrderedDict').op(')').op('R');
  }

  /** Pushes a tensor rebuilt by `rebuild` over storage ('storage', torch.<storageType>, key, 'cpu', numel). */
  tensor(t: { storageType: string; key: string; numel: number; offset: number; shape: number[]; stride: number[];
    rebuild?: string; dtype?: string }): this {
    this.global('torch._utils', t.rebuild ?? '_rebuild_tensor_v2').op('(');
    this.op('(').str('storage').global('torch', t.storageType).str(t.key).str('cpu').int(t.numel).op('t').op('Q');
    this.int(t.offset).ints(t.shape).ints(t.stride).op(0x89).orderedDict();
    if (t.dtype) this.global('torch', t.dtype);
    return this.op('t').op('R');
  }

  /** Pushes an instance of an arbitrary class (module.name()). */
  object(module: string, name: string): this {
    return this.global(module, name).op(')').op('R');
  }

  emptyDict(): this {
    return this.op('}');
  }

  /** Adds key -> (whatever `value` pushes) to the dict on top of the stack. */
  item(key: string, value: (w: this) => void): this {
    this.str(key);
    value(this);
    return this.op('s');
  }

  finish(): Uint8Array {
    return Uint8Array.from([...this.out, '.'.charCodeAt(0)]);
  }
}

export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** A torch.save-like zip: <folder>/data.pkl plus <folder>/data/<key> storages (deflated unless level 0). */
export function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array>, folder = 'archive', level: 0 | 6 = 6): Uint8Array {
  const files: Record<string, Uint8Array> = { [`${folder}/data.pkl`]: pkl };
  for (const [k, v] of Object.entries(storages)) files[`${folder}/data/${k}`] = v;
  return zipSync(files, { level });
}
