// Payloads and results as a JS user expects them (numbers when safe, bigints beyond,
// never a rounded number or an integer sent as a float), and the string helpers that
// keep the SDK's own frames valid UTF-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { encode, decode } from '@msgpack/msgpack';

const require = createRequire(import.meta.url);
const { decodePayload, encodeResult, wellFormed, replaceLoneSurrogates, head } = require('../lib/values.cjs');
const { Worker } = require('../lib/worker.cjs');

const exact = (bytes) => decode(bytes, { useBigInt64: true }); // 64-bit integers as bigints, floats as numbers

test('decodePayload: numbers when safe, bigints beyond, nested and as map keys', () => {
  const wide = encode({ a: [1n, 2n ** 53n - 1n, 2n ** 53n, -(2n ** 53n)] }, { useBigInt64: true });
  assert.deepEqual(decodePayload(wide), { a: [1, Number.MAX_SAFE_INTEGER, 2n ** 53n, -(2n ** 53n)] });
  // {2^60 + 1: 'k'}, a uint64 key (the encoder writes no such map): its exact decimal.
  const keyed = Buffer.from([0x81, 0xcf, 0x10, 0, 0, 0, 0, 0, 0, 1, 0xa1, 0x6b]);
  assert.deepEqual(decodePayload(keyed), { [String(2n ** 60n + 1n)]: 'k' });
  assert.equal(decodePayload(encode(2n ** 64n - 1n, { useBigInt64: true })), 2n ** 64n - 1n);
  assert.deepEqual(decodePayload(encode({ s: 'x', f: 1.5, n: -3 })), { s: 'x', f: 1.5, n: -3 }, 'no 64-bit integer');
});

test('encodeResult: safe integers are integers, bigints 64-bit integers, the handler\'s value untouched', () => {
  const value = { ts: 1700000000000, list: [-(2 ** 40), 2 ** 32 - 1, -(2 ** 31)], big: 2n ** 63n, f: 0.5, bin: new Uint8Array([1]) };
  const bytes = encodeResult(value);
  assert.deepEqual(exact(bytes), { ts: 1700000000000n, list: [-(2n ** 40n), 2 ** 32 - 1, -(2 ** 31)], big: 2n ** 63n, f: 0.5, bin: new Uint8Array([1]) });
  assert.equal(value.ts, 1700000000000, 'the handler\'s object is not changed');
  assert.equal(exact(encodeResult(1700000000000)), 1700000000000n, 'without a bigint anywhere too');
  assert.equal(exact(encodeResult(2 ** 60)), 2 ** 60, 'an unsafe number stays a float64');
  assert.throws(() => encodeResult(2n ** 64n), /does not fit in 64 bits/);
  assert.throws(() => encodeResult(-(2n ** 63n) - 1n), /does not fit in 64 bits/);
  const cycle = { n: 1n };
  cycle.self = cycle;
  assert.throws(() => encodeResult(cycle), /Too deep/);
});

test('encodeResult: a lone surrogate in a string or a key goes out as U+FFFD, the rest as it was', () => {
  const value = { ['k\ud800']: ['x\udc00y', 'ok 😀', new Uint8Array([0xed, 0xa0, 0x80])], n: 1 };
  const decoded = decode(encodeResult(value));
  // Written as 0xED 0xA0-0xBF, a lone surrogate would decode as one again.
  const strings = [];
  const walk = (node) => {
    if (typeof node === 'string') strings.push(node);
    else if (node && typeof node === 'object' && !ArrayBuffer.isView(node)) {
      for (const [k, v] of Object.entries(node)) {
        strings.push(k);
        walk(v);
      }
    }
  };
  walk(decoded);
  for (const text of strings) assert.equal(wellFormed(text), text);
  assert.deepEqual(decoded, { 'k\uFFFD': ['x\uFFFDy', 'ok 😀', new Uint8Array([0xed, 0xa0, 0x80])], n: 1 });
  assert.equal(Object.keys(value)[0], 'k\ud800', 'the handler\'s object is not changed');
  // No lone surrogate: the bytes the encoder wrote, even with an 0xED byte in a binary.
  const plain = { b: new Uint8Array([0xed]), s: 'fine' };
  assert.deepEqual(encodeResult(plain), encode(plain));
});

test('wellFormed and its Node 18 fallback: lone surrogates become U+FFFD, pairs stay', () => {
  const text = 'a\ud83d b\ude00 😀 \udc00\ud83d';
  for (const fn of [wellFormed, replaceLoneSurrogates]) {
    assert.equal(fn(text), 'a\uFFFD b\uFFFD 😀 \uFFFD\uFFFD');
    assert.equal(fn('plain'), 'plain');
  }
});

test('head: never ends between the halves of a pair', () => {
  assert.equal(head('a😀b', 2), 'a');
  assert.equal(head('a😀b', 3), 'a😀');
  assert.equal(head('abc', -5), '');
  assert.equal(head('abc', 10), 'abc');
});

test('a task type with a lone surrogate is refused (it would make `ready` invalid UTF-8)', () => {
  assert.throws(() => new Worker().handle('half \ud83d', () => null), /lone surrogate/);
  assert.doesNotThrow(() => new Worker().handle('emoji 😀', () => null));
});
