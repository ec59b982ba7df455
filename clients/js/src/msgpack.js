// @ts-check
/**
 * MessagePack for the `tickmesh.v1.msgpack` encoding: the subset the protocol uses.
 *
 * Encodes nil, booleans, numbers (integers in the safe range as the smallest int
 * format, everything else as float64), strings, `Uint8Array`/`ArrayBuffer` as bin,
 * arrays and plain objects (string keys; `undefined` values are left out, as JSON
 * does). Decodes all of those plus float32, and the whole int family. Integers
 * beyond 2^53 decode to `BigInt` (the protocol keeps every integer below 2^53);
 * ext values decode to `{ type, data }` so an unknown field cannot fail a message.
 *
 * @module msgpack
 */

const MAX_DEPTH = 100;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** A growable output buffer. */
class Writer {
  constructor() {
    this.bytes = new Uint8Array(128);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }

  /** @param {number} n bytes about to be written */
  reserve(n) {
    const needed = this.length + n;
    if (needed <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.bytes.subarray(0, this.length));
    this.bytes = bigger;
    this.view = new DataView(bigger.buffer);
  }

  /** @param {number} b */
  u8(b) {
    this.reserve(1);
    this.bytes[this.length++] = b;
  }

  /** @param {number} tag @param {number} v */
  tagU8(tag, v) {
    this.reserve(2);
    this.bytes[this.length++] = tag;
    this.bytes[this.length++] = v;
  }

  /** @param {number} tag @param {number} v */
  tagU16(tag, v) {
    this.reserve(3);
    this.bytes[this.length++] = tag;
    this.view.setUint16(this.length, v);
    this.length += 2;
  }

  /** @param {number} tag @param {number} v */
  tagU32(tag, v) {
    this.reserve(5);
    this.bytes[this.length++] = tag;
    this.view.setUint32(this.length, v);
    this.length += 4;
  }

  /** @param {number} tag @param {number} v a safe integer */
  tag64(tag, v) {
    this.reserve(9);
    this.bytes[this.length++] = tag;
    // Split into 32-bit halves; floor division keeps negative values two's complement.
    const hi = Math.floor(v / 0x100000000);
    const lo = v - hi * 0x100000000;
    this.view.setInt32(this.length, hi);
    this.view.setUint32(this.length + 4, lo);
    this.length += 8;
  }

  /** @param {number} v */
  float64(v) {
    this.reserve(9);
    this.bytes[this.length++] = 0xcb;
    this.view.setFloat64(this.length, v);
    this.length += 8;
  }

  /** @param {Uint8Array} b */
  raw(b) {
    this.reserve(b.length);
    this.bytes.set(b, this.length);
    this.length += b.length;
  }

  result() {
    return this.bytes.slice(0, this.length);
  }
}

/**
 * Encodes one value.
 * @param {unknown} value
 * @returns {Uint8Array}
 */
export function encode(value) {
  const w = new Writer();
  write(w, value, 0);
  return w.result();
}

/**
 * @param {Writer} w
 * @param {unknown} v
 * @param {number} depth
 */
function write(w, v, depth) {
  if (depth > MAX_DEPTH) throw new RangeError('msgpack: nesting too deep');
  if (v === null || v === undefined) return w.u8(0xc0);
  switch (typeof v) {
    case 'boolean':
      return w.u8(v ? 0xc3 : 0xc2);
    case 'number':
      return writeNumber(w, v);
    case 'string':
      return writeString(w, v);
    case 'bigint':
      if (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) {
        return writeNumber(w, Number(v));
      }
      throw new RangeError('msgpack: bigint outside the safe integer range');
    case 'object':
      if (v instanceof Uint8Array) return writeBin(w, v);
      if (v instanceof ArrayBuffer) return writeBin(w, new Uint8Array(v));
      if (Array.isArray(v)) {
        writeLength(w, v.length, 0x90, 0xdc, 0xdd);
        for (const item of v) write(w, item, depth + 1);
        return;
      }
      return writeMap(w, /** @type {Record<string, unknown>} */ (v), depth);
    default:
      throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
  }
}

/** @param {Writer} w @param {number} v */
function writeNumber(w, v) {
  if (!Number.isSafeInteger(v) || Object.is(v, -0)) return w.float64(v);
  if (v >= 0) {
    if (v < 0x80) return w.u8(v);
    if (v < 0x100) return w.tagU8(0xcc, v);
    if (v < 0x10000) return w.tagU16(0xcd, v);
    if (v < 0x100000000) return w.tagU32(0xce, v);
    return w.tag64(0xcf, v);
  }
  if (v >= -32) return w.u8(v & 0xff);
  if (v >= -0x80) return w.tagU8(0xd0, v & 0xff);
  if (v >= -0x8000) return w.tagU16(0xd1, v & 0xffff);
  if (v >= -0x80000000) return w.tagU32(0xd2, v >>> 0);
  return w.tag64(0xd3, v);
}

/** @param {Writer} w @param {string} s */
function writeString(w, s) {
  const b = utf8Encoder.encode(s);
  if (b.length < 32) w.u8(0xa0 | b.length);
  else writeLength(w, b.length, -1, 0xda, 0xdb, 0xd9);
  w.raw(b);
}

/** @param {Writer} w @param {Uint8Array} b */
function writeBin(w, b) {
  writeLength(w, b.length, -1, 0xc5, 0xc6, 0xc4);
  w.raw(b);
}

/** @param {Writer} w @param {Record<string, unknown>} obj @param {number} depth */
function writeMap(w, obj, depth) {
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
  writeLength(w, keys.length, 0x80, 0xde, 0xdf);
  for (const k of keys) {
    writeString(w, k);
    write(w, obj[k], depth + 1);
  }
}

/**
 * Writes a container or byte-string header: the fix form (up to 15 entries) when
 * `fix` is given, else the 8-bit form when `tag8` is given, then 16- or 32-bit.
 * @param {Writer} w
 * @param {number} n
 * @param {number} fix tag of the fix form, or -1
 * @param {number} tag16
 * @param {number} tag32
 * @param {number} [tag8]
 */
function writeLength(w, n, fix, tag16, tag32, tag8) {
  if (fix >= 0 && n < 16) return w.u8(fix | n);
  if (tag8 !== undefined && n < 0x100) return w.tagU8(tag8, n);
  if (n < 0x10000) return w.tagU16(tag16, n);
  if (n <= 0xffffffff) return w.tagU32(tag32, n);
  throw new RangeError('msgpack: too long');
}

/**
 * Decodes exactly one value; trailing bytes or a truncated input are errors.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} input
 * @returns {any}
 */
export function decode(input) {
  const bytes =
    input instanceof Uint8Array
      ? input
      : input instanceof ArrayBuffer
        ? new Uint8Array(input)
        : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  const r = new Reader(bytes);
  const value = r.value(0);
  if (r.pos !== bytes.length) {
    throw new RangeError(`msgpack: ${bytes.length - r.pos} trailing bytes`);
  }
  return value;
}

class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  /** @param {number} n @returns {number} the offset of the n bytes taken */
  take(n) {
    const at = this.pos;
    if (at + n > this.bytes.length) throw new RangeError('msgpack: truncated input');
    this.pos = at + n;
    return at;
  }

  /** Refuses a container header that claims more entries than bytes are left. @param {number} n */
  room(n) {
    if (n > this.bytes.length - this.pos) throw new RangeError('msgpack: truncated input');
  }

  u8() {
    return this.bytes[this.take(1)];
  }
  u16() {
    return this.view.getUint16(this.take(2));
  }
  u32() {
    return this.view.getUint32(this.take(4));
  }

  /** @param {boolean} signed */
  int64(signed) {
    const at = this.take(8);
    const hi = signed ? this.view.getInt32(at) : this.view.getUint32(at);
    const lo = this.view.getUint32(at + 4);
    const n = hi * 0x100000000 + lo;
    if (Number.isSafeInteger(n)) return n;
    return signed ? this.view.getBigInt64(at) : this.view.getBigUint64(at);
  }

  /** @param {number} n */
  str(n) {
    const at = this.take(n);
    return utf8Decoder.decode(this.bytes.subarray(at, at + n));
  }

  /** @param {number} n */
  bin(n) {
    const at = this.take(n);
    return this.bytes.slice(at, at + n);
  }

  /** @param {number} n @param {number} depth */
  array(n, depth) {
    this.room(n);
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  /** @param {number} n @param {number} depth */
  map(n, depth) {
    this.room(2 * n);
    /** @type {Record<string, unknown>} */
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      if (typeof key !== 'string' && typeof key !== 'number') {
        throw new TypeError('msgpack: map key is neither a string nor a number');
      }
      const value = this.value(depth + 1);
      if (key === '__proto__') {
        // An own property, as JSON.parse makes it; never the prototype.
        Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      } else {
        out[key] = value;
      }
    }
    return out;
  }

  /** @param {number} type @param {number} n */
  ext(type, n) {
    return { type: type > 127 ? type - 256 : type, data: this.bin(n) };
  }

  /** @param {number} depth @returns {any} */
  value(depth) {
    if (depth > MAX_DEPTH) throw new RangeError('msgpack: nesting too deep');
    const b = this.u8();
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b < 0x90) return this.map(b & 0x0f, depth);
    if (b < 0xa0) return this.array(b & 0x0f, depth);
    if (b < 0xc0) return this.str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xc7: { const n = this.u8(); return this.ext(this.u8(), n); }
      case 0xc8: { const n = this.u16(); return this.ext(this.u8(), n); }
      case 0xc9: { const n = this.u32(); return this.ext(this.u8(), n); }
      case 0xca: return this.view.getFloat32(this.take(4));
      case 0xcb: return this.view.getFloat64(this.take(8));
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.int64(false);
      case 0xd0: return this.view.getInt8(this.take(1));
      case 0xd1: return this.view.getInt16(this.take(2));
      case 0xd2: return this.view.getInt32(this.take(4));
      case 0xd3: return this.int64(true);
      case 0xd4: return this.ext(this.u8(), 1);
      case 0xd5: return this.ext(this.u8(), 2);
      case 0xd6: return this.ext(this.u8(), 4);
      case 0xd7: return this.ext(this.u8(), 8);
      case 0xd8: return this.ext(this.u8(), 16);
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      default: throw new TypeError(`msgpack: unused tag 0x${b.toString(16)}`);
    }
  }
}
