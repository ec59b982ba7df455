import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '../src/msgpack.js';

const hex = (bytes) => Buffer.from(bytes).toString('hex').match(/../g)?.join(' ') ?? '';
const unhex = (s) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

test('golden bytes', () => {
  const cases = [
    [{ op: 'ping' }, '81 a2 6f 70 a4 70 69 6e 67'],
    [null, 'c0'],
    [false, 'c2'],
    [true, 'c3'],
    [0, '00'],
    [127, '7f'],
    [128, 'cc 80'],
    [256, 'cd 01 00'],
    [65536, 'ce 00 01 00 00'],
    [2 ** 32, 'cf 00 00 00 01 00 00 00 00'],
    [Number.MAX_SAFE_INTEGER, 'cf 00 1f ff ff ff ff ff ff'],
    [-1, 'ff'],
    [-32, 'e0'],
    [-33, 'd0 df'],
    [-129, 'd1 ff 7f'],
    [-32769, 'd2 ff ff 7f ff'],
    [-(2 ** 31) - 1, 'd3 ff ff ff ff 7f ff ff ff'],
    [1.5, 'cb 3f f8 00 00 00 00 00 00'],
    [189.12, 'cb 40 67 a3 d7 0a 3d 70 a4'],
    ['', 'a0'],
    ['é', 'a2 c3 a9'],
    [[1, 'a'], '92 01 a1 61'],
    [new Uint8Array([1, 2]), 'c4 02 01 02'],
    [{ a: undefined, b: 1 }, '81 a1 62 01'],
  ];
  for (const [value, bytes] of cases) {
    assert.equal(hex(encode(value)), bytes, `encode ${JSON.stringify(value)}`);
  }
});

test('headers take the smallest form', () => {
  const head = (v, n) => hex(encode(v).subarray(0, n));
  assert.equal(head('x'.repeat(31), 1), 'bf');
  assert.equal(head('x'.repeat(32), 2), 'd9 20');
  assert.equal(head('x'.repeat(256), 3), 'da 01 00');
  assert.equal(head('x'.repeat(65536), 5), 'db 00 01 00 00');
  assert.equal(head(new Array(15).fill(0), 1), '9f');
  assert.equal(head(new Array(16).fill(0), 3), 'dc 00 10');
  const map16 = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i]));
  assert.equal(head(map16, 3), 'de 00 10');
  assert.equal(head(new Uint8Array(256), 3), 'c5 01 00');
});

test('a subscribe request encodes as the server expects', () => {
  const bytes = encode({ op: 'subscribe', id: 1, symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
  assert.equal(
    hex(bytes),
    '85 a2 6f 70 a9 73 75 62 73 63 72 69 62 65 a2 69 64 01 a7 73 79 6d 62 6f 6c 73 91 a4 41 41 50 4c ' +
      'a4 6d 6f 64 65 a5 71 75 6f 74 65 ab 69 6e 74 65 72 76 61 6c 5f 6d 73 cc fa',
  );
});

test('decodes the forms a server may choose', () => {
  assert.equal(decode(unhex('ca 3f c0 00 00')), 1.5, 'float32');
  assert.equal(decode(unhex('cc 05')), 5, 'uint8 for a small value');
  assert.equal(decode(unhex('d3 00 00 00 00 00 00 00 07')), 7, 'int64 for a small value');
  assert.equal(decode(unhex('cf 00 1f ff ff ff ff ff ff')), Number.MAX_SAFE_INTEGER);
  assert.equal(decode(unhex('cf 00 20 00 00 00 00 00 01')), 2n ** 53n + 1n, 'beyond 2^53: a BigInt, exact');
  assert.equal(decode(unhex('d9 03 61 62 63')), 'abc', 'str8 for a short string');
  assert.deepEqual(decode(unhex('de 00 01 a1 6b c0')), { k: null }, 'map16');
  assert.deepEqual(decode(unhex('dc 00 02 c3 c2')), [true, false], 'array16');
  assert.deepEqual(decode(unhex('c5 00 01 ff')), new Uint8Array([255]), 'bin16');
  assert.deepEqual(decode(unhex('d4 01 09')), { type: 1, data: new Uint8Array([9]) }, 'fixext1');
  assert.deepEqual(decode(unhex('82 a1 61 01 a1 62 d6 ff 00 00 00 00')).a, 1, 'an ext value does not fail its message');
});

test('round-trips every size boundary', () => {
  const ints = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1),
  ];
  for (const n of ints) assert.equal(decode(encode(n)), n, `int ${n}`);
  for (const f of [0.1, -2.5, 189.12, 1e300, -1e-300, Infinity, -Infinity]) assert.equal(decode(encode(f)), f);
  assert.ok(Number.isNaN(decode(encode(NaN))));
  assert.ok(Object.is(decode(encode(-0)), -0));
  for (const n of [0, 31, 32, 255, 256, 65535, 65536]) {
    const s = 'x'.repeat(n);
    assert.equal(decode(encode(s)), s, `string of ${n}`);
    const b = new Uint8Array(n).map((_, i) => i & 0xff);
    assert.deepEqual(decode(encode(b)), b, `bin of ${n}`);
  }
  for (const n of [0, 15, 16, 65535, 65536]) {
    const a = Array.from({ length: n }, (_, i) => i);
    assert.deepEqual(decode(encode(a)), a, `array of ${n}`);
    const o = Object.fromEntries(a.slice(0, Math.min(n, 70000)).map((i) => [`k${i}`, i]));
    assert.deepEqual(decode(encode(o)), o, `map of ${n}`);
  }
});

test('round-trips a full tick', () => {
  const tick = {
    type: 'ticks',
    ticks: [
      {
        symbol: 'AAPL261218C00150000',
        seq: 1_700_000_000_123_456,
        epoch: 1_700_000_000_000_000,
        ts: 1_700_000_000_999_999,
        kind: 'option',
        last: 41.25,
        bid: 41.1,
        ask: 41.4,
        bid_size: 12,
        ask_size: 9,
        underlying: 'AAPL',
        expiry: '2026-12-18',
        strike: 150,
        right: 'C',
        iv: 0.2875,
        delta: 0.81,
        depth: { bids: [[41.1, 12], [41.05, 30]], asks: [[41.4, 9]] },
        note: '日本語 ✓',
      },
    ],
  };
  assert.deepEqual(decode(encode(tick)), tick);
});

test('rejects truncated input, trailing bytes and unused tags', () => {
  assert.throws(() => decode(unhex('81 a2 6f 70 a4 70 69 6e')), /truncated/);
  assert.throws(() => decode(unhex('cd 01')), /truncated/);
  assert.throws(() => decode(unhex('dd ff ff ff ff')), /truncated/, 'a huge array header without its items');
  assert.throws(() => decode(unhex('c0 c0')), /trailing/);
  assert.throws(() => decode(unhex('c1')), /unused tag/);
  assert.throws(() => decode(unhex('a2 c3 28')), TypeError, 'invalid UTF-8');
});

test('a __proto__ key is plain data', () => {
  const v = decode(unhex('81 a9 5f 5f 70 72 6f 74 6f 5f 5f 81 a1 78 01'));
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.deepEqual(Object.keys(v), ['__proto__']);
  assert.equal(v.x, undefined);
});

test('accepts ArrayBuffer and Buffer input', () => {
  const bytes = encode({ op: 'ping' });
  assert.deepEqual(decode(bytes.buffer), { op: 'ping' });
  assert.deepEqual(decode(Buffer.from(bytes)), { op: 'ping' });
});
