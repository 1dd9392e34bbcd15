'use strict';
// What the SDK puts on the wire besides the envelope: the task's payload decoded and
// the handler's result encoded with integers kept exact (as the Python and Rust SDKs
// keep them), and the strings of error and log frames kept valid UTF-8.

const { Encoder, Decoder } = require('@msgpack/msgpack');

// @msgpack/msgpack has no "a number when safe, else a bigint" mode. Without
// useBigInt64 it rounds a 64-bit integer past 2^53 to a number and cannot encode a
// bigint; with it, it decodes every 64-bit integer (even 5 written as a uint64) as a
// bigint and writes a number of 2^32 or more as a float64, which a caller expecting an
// integer refuses. So each direction uses the plain coder when that is exact, and the
// bigint one with a pass over the value when it is not.
const MAX_DEPTH = 100; // the encoders' nesting limit (their default)
const plainDecoder = new Decoder();
const wideDecoder = new Decoder({ useBigInt64: true, mapKeyConverter: mapKey });
const plainEncoder = new Encoder({ maxDepth: MAX_DEPTH });
const wideEncoder = new Encoder({ useBigInt64: true, maxDepth: MAX_DEPTH });

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_INT64 = -(2n ** 63n);
const MAX_UINT64 = 2n ** 64n - 1n;

/**
 * A payload's value: integers are numbers when they are safe integers (|n| < 2^53),
 * bigints beyond, never a rounded number.
 */
function decodePayload(bytes) {
  // 0xcf and 0xd3 start a uint64 and an int64: without either byte there is none to round.
  if (bytes.indexOf(0xcf) < 0 && bytes.indexOf(0xd3) < 0) return plainDecoder.decode(bytes);
  return narrowed(wideDecoder.decode(bytes));
}

/** A 64-bit integer map key as the decimal a number key would become; other keys as the default converter takes them. */
function mapKey(key) {
  if (typeof key === 'bigint') return String(key);
  if (typeof key === 'string' || typeof key === 'number') return key;
  throw new TypeError(`a map key must be a string or a number, not ${typeof key}`);
}

/** `root` (freshly decoded, so ours to change) with each bigint that is a safe integer made a number. */
function narrowed(root) {
  if (typeof root === 'bigint') return narrowInt(root);
  // A loop, not recursion: the decoder takes any nesting, and so must this.
  const stack = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === null || typeof node !== 'object' || ArrayBuffer.isView(node)) continue;
    for (const key of Array.isArray(node) ? node.keys() : Object.keys(node)) {
      const value = node[key];
      if (typeof value === 'bigint') node[key] = narrowInt(value);
      else if (value !== null && typeof value === 'object') stack.push(value);
    }
  }
  return root;
}

function narrowInt(value) {
  return value >= MIN_SAFE && value <= MAX_SAFE ? Number(value) : value;
}

/**
 * A result's MessagePack: a safe integer is an integer (uint64/int64 where it needs
 * 64 bits), a bigint a uint64 or int64 (a RangeError when it fits neither), any other
 * number a float64; every string and map key valid UTF-8 (a lone surrogate is U+FFFD).
 */
function encodeResult(value) {
  const bytes = encodeExact(value);
  // The encoder writes a lone surrogate as 0xED 0xA0-0xBF (invalid UTF-8, which
  // a caller cannot decode): without an 0xED byte there is none.
  if (bytes.indexOf(0xed) < 0) return bytes;
  const clean = wellFormedStrings(value, 1);
  return clean === value ? bytes : encodeExact(clean);
}

function encodeExact(value) {
  try {
    return plainEncoder.encode(value); // exact, unless the value holds a bigint (it throws)
  } catch {
    // A bigint, or a value no encoder takes: the bigint encoder says which.
  }
  return wideEncoder.encode(widened(value, 1));
}

/**
 * `value`, or a copy (the handler's objects are left alone) in which every string
 * and every key is well-formed.
 */
function wellFormedStrings(value, depth) {
  if (typeof value === 'string') return wellFormed(value);
  // Past the encoder's nesting limit it throws anyway (and a cycle ends here).
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || depth > MAX_DEPTH) return value;
  if (Array.isArray(value)) {
    let copy = null;
    value.forEach((item, i) => {
      const clean = wellFormedStrings(item, depth + 1);
      if (clean !== item) {
        copy ??= value.slice();
        copy[i] = clean;
      }
    });
    return copy ?? value;
  }
  const keys = Object.keys(value);
  const items = keys.map((key) => [wellFormed(key), wellFormedStrings(value[key], depth + 1)]);
  if (items.every(([key, item], i) => key === keys[i] && item === value[keys[i]])) return value;
  return Object.fromEntries(items);
}

/**
 * `value`, or a copy (the handler's objects are left alone) in which the safe integers
 * the bigint encoder would write as float64s are bigints; a bigint that fits no
 * 64-bit integer throws (the encoder would wrap it around silently).
 */
function widened(value, depth) {
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && (value >= 2 ** 32 || value < -(2 ** 31)) ? BigInt(value) : value;
  }
  if (typeof value === 'bigint') {
    if (value < MIN_INT64 || value > MAX_UINT64) throw new RangeError(`the integer ${value} does not fit in 64 bits`);
    return value;
  }
  // Past the encoder's nesting limit it throws anyway (and a cycle ends here).
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || depth > MAX_DEPTH) return value;
  let copy = null;
  for (const key of Array.isArray(value) ? value.keys() : Object.keys(value)) {
    const item = widened(value[key], depth + 1);
    if (item !== value[key]) {
      copy ??= Array.isArray(value) ? value.slice() : { ...value };
      copy[key] = item;
    }
  }
  return copy ?? value;
}

/**
 * `text` with each lone surrogate (half of a pair, which JS strings may hold) replaced
 * by U+FFFD: encoded as it is, it would be invalid UTF-8, which the manager takes for
 * a broken stream. String.prototype.toWellFormed is Node 20+; the package says 18.
 */
const wellFormed =
  typeof String.prototype.toWellFormed === 'function' ? (text) => text.toWellFormed() : replaceLoneSurrogates;

function replaceLoneSurrogates(text) {
  // With the u flag a whole pair is one code point, so only lone halves match.
  return text.replace(/\p{Surrogate}/gu, '\uFFFD');
}

/** The first `length` code units of `text`, one fewer where the cut would split a surrogate pair. */
function head(text, length) {
  const end = Math.max(0, length);
  const last = text.charCodeAt(end - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? end - 1 : end);
}

module.exports = { decodePayload, encodeResult, wellFormed, replaceLoneSurrogates, head };
