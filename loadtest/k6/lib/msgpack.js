// A small MessagePack codec for the `tickmesh.v1.msgpack` encoding: enough of the format
// for protocol v1 (maps with string keys, arrays, strings, integers, floats, booleans,
// nil). k6 1.1.0 ships no MessagePack module and no TextDecoder, so UTF-8 is done here.

export function encode(value) {
  const out = [];
  write(out, value);
  return new Uint8Array(out).buffer;
}

export function decode(buffer) {
  const bytes = new Uint8Array(buffer);
  const r = { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), pos: 0 };
  const value = read(r);
  if (r.pos !== bytes.length) {
    throw new Error(`msgpack: ${bytes.length - r.pos} trailing bytes`);
  }
  return value;
}

function write(out, v) {
  if (v === null || v === undefined) {
    out.push(0xc0);
  } else if (v === true || v === false) {
    out.push(v ? 0xc3 : 0xc2);
  } else if (typeof v === 'number') {
    writeNumber(out, v);
  } else if (typeof v === 'string') {
    const b = utf8Encode(v);
    if (b.length < 32) out.push(0xa0 | b.length);
    else if (b.length < 0x100) out.push(0xd9, b.length);
    else if (b.length < 0x10000) out.push(0xda, b.length >> 8, b.length & 0xff);
    else out.push(0xdb, ...be32(b.length));
    for (const x of b) out.push(x);
  } else if (Array.isArray(v)) {
    writeLength(out, v.length, 0x90, 0xdc, 0xdd);
    for (const x of v) write(out, x);
  } else if (typeof v === 'object') {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    writeLength(out, keys.length, 0x80, 0xde, 0xdf);
    for (const k of keys) {
      write(out, k);
      write(out, v[k]);
    }
  } else {
    throw new Error(`msgpack: cannot encode a ${typeof v}`);
  }
}

function writeLength(out, n, fix, m16, m32) {
  if (n < 16) out.push(fix | n);
  else if (n < 0x10000) out.push(m16, n >> 8, n & 0xff);
  else out.push(m32, ...be32(n));
}

function writeNumber(out, v) {
  if (Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
    if (v < 0x80) out.push(v);
    else if (v < 0x100) out.push(0xcc, v);
    else if (v < 0x10000) out.push(0xcd, v >> 8, v & 0xff);
    else if (v < 0x100000000) out.push(0xce, ...be32(v));
    else out.push(0xcf, ...be32(Math.floor(v / 0x100000000)), ...be32(v % 0x100000000));
  } else if (Number.isInteger(v) && v < 0 && v >= -0x80000000) {
    if (v >= -32) out.push(v & 0xff);
    else out.push(0xd2, ...be32(v >>> 0));
  } else {
    const b = new DataView(new ArrayBuffer(8));
    b.setFloat64(0, v);
    out.push(0xcb);
    for (let i = 0; i < 8; i++) out.push(b.getUint8(i));
  }
}

function be32(n) {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

function need(r, n) {
  if (r.pos + n > r.bytes.length) throw new Error('msgpack: truncated');
}

function read(r) {
  need(r, 1);
  const b = r.bytes[r.pos++];
  if (b < 0x80) return b;
  if (b >= 0xe0) return b - 0x100;
  if ((b & 0xf0) === 0x80) return readMap(r, b & 0x0f);
  if ((b & 0xf0) === 0x90) return readArray(r, b & 0x0f);
  if ((b & 0xe0) === 0xa0) return readStr(r, b & 0x1f);
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xca: return num(r, 4, (v, p) => v.getFloat32(p));
    case 0xcb: return num(r, 8, (v, p) => v.getFloat64(p));
    case 0xcc: return num(r, 1, (v, p) => v.getUint8(p));
    case 0xcd: return num(r, 2, (v, p) => v.getUint16(p));
    case 0xce: return num(r, 4, (v, p) => v.getUint32(p));
    case 0xcf: return num(r, 8, (v, p) => v.getUint32(p) * 0x100000000 + v.getUint32(p + 4));
    case 0xd0: return num(r, 1, (v, p) => v.getInt8(p));
    case 0xd1: return num(r, 2, (v, p) => v.getInt16(p));
    case 0xd2: return num(r, 4, (v, p) => v.getInt32(p));
    case 0xd3: return num(r, 8, (v, p) => v.getInt32(p) * 0x100000000 + v.getUint32(p + 4));
    case 0xd9: return readStr(r, num(r, 1, (v, p) => v.getUint8(p)));
    case 0xda: return readStr(r, num(r, 2, (v, p) => v.getUint16(p)));
    case 0xdb: return readStr(r, num(r, 4, (v, p) => v.getUint32(p)));
    case 0xdc: return readArray(r, num(r, 2, (v, p) => v.getUint16(p)));
    case 0xdd: return readArray(r, num(r, 4, (v, p) => v.getUint32(p)));
    case 0xde: return readMap(r, num(r, 2, (v, p) => v.getUint16(p)));
    case 0xdf: return readMap(r, num(r, 4, (v, p) => v.getUint32(p)));
    default: throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)}`);
  }
}

function num(r, size, get) {
  need(r, size);
  const v = get(r.view, r.pos);
  r.pos += size;
  return v;
}

function readArray(r, n) {
  const a = new Array(n);
  for (let i = 0; i < n; i++) a[i] = read(r);
  return a;
}

function readMap(r, n) {
  const o = {};
  for (let i = 0; i < n; i++) {
    const k = read(r);
    if (typeof k !== 'string') throw new Error('msgpack: map key is not a string');
    o[k] = read(r);
  }
  return o;
}

function readStr(r, n) {
  need(r, n);
  const s = utf8Decode(r.bytes, r.pos, r.pos + n);
  r.pos += n;
  return s;
}

function utf8Encode(s) {
  const out = [];
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else {
      out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    }
  }
  return out;
}

function utf8Decode(bytes, start, end) {
  let s = '';
  let i = start;
  while (i < end) {
    const b = bytes[i++];
    let c;
    if (b < 0x80) c = b;
    else if (b < 0xe0) c = ((b & 0x1f) << 6) | (bytes[i++] & 0x3f);
    else if (b < 0xf0) c = ((b & 0x0f) << 12) | ((bytes[i++] & 0x3f) << 6) | (bytes[i++] & 0x3f);
    else {
      c = ((b & 0x07) << 18) | ((bytes[i++] & 0x3f) << 12) | ((bytes[i++] & 0x3f) << 6) | (bytes[i++] & 0x3f);
    }
    s += String.fromCodePoint(c);
  }
  return s;
}
