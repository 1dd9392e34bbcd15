'use strict';
// Floats in the envelope, told apart from integers. @msgpack/msgpack decodes the
// float 5.0 and the integer 5 to the same JS number, but every number in a manager
// message is an integer (PROTOCOL.md, Message encoding): a float where one is due is
// a malformed message, as the Rust and Python SDKs take it. So the raw type byte of
// each top-level value is read, and a float found there is boxed, which no check for
// an integer key accepts.

/** A top-level value the manager sent as a MessagePack float (float 32 or 64). */
class WireFloat {
  constructor(value) {
    this.value = value;
  }

  /** The value as a float: `5.0`, not `5` (as the Python and Rust SDKs show it). */
  toString() {
    const text = Object.is(this.value, -0) ? '-0' : String(this.value);
    return /^-?\d+$/.test(text) ? `${text}.0` : text;
  }
}

const FLOAT32 = 0xca;
const FLOAT64 = 0xcb;

/**
 * `message`, decoded from `body` (a well-formed MessagePack map), with each value its
 * map holds as a float boxed in a WireFloat. Reads a marker per entry: a key's bytes
 * are decoded only once a float turned up.
 */
function markFloats(body, message) {
  let at = mapStart(body);
  const count = mapSize(body);
  let lastIsFloat = null; // key -> whether its last value is a float, once one was seen
  for (let i = 0; i < count; i++) {
    const key = at;
    at = skip(body, at);
    const float = body[at] === FLOAT32 || body[at] === FLOAT64;
    if (float || lastIsFloat !== null) {
      const name = keyName(body, key, at);
      if (name !== null) (lastIsFloat ??= new Map()).set(name, float);
    }
    at = skip(body, at);
  }
  if (lastIsFloat === null) return message;
  for (const [name, float] of lastIsFloat) {
    if (float) message[name] = new WireFloat(message[name]);
  }
  return message;
}

/** The number of entries of the map at the start of `body` (fixmap, map 16 or map 32). */
function mapSize(body) {
  const head = body[0];
  if (head <= 0x8f) return head & 0x0f;
  return head === 0xde ? body.readUInt16BE(1) : body.readUInt32BE(1);
}

/** Where the first key of the map at the start of `body` is. */
function mapStart(body) {
  const head = body[0];
  if (head <= 0x8f) return 1;
  return head === 0xde ? 3 : 5;
}

/** The string key from `start` to `end`, or null for a key of another type. */
function keyName(body, start, end) {
  const head = body[start];
  if (head >= 0xa0 && head <= 0xbf) return body.toString('utf8', start + 1, end);
  // str 8, 16 and 32.
  if (head >= 0xd9 && head <= 0xdb) return body.toString('utf8', start + HEADER[head - 0xc0], end);
  return null;
}

// Per marker 0xc0 + i, a value's layout: HEADER[i] bytes before its data, of which
// LENGTH[i] hold a length (0: none), and for containers ITEMS[i] values per length
// unit (1 for an array, 2 for a map; 0: the length counts bytes of data).
const HEADER = Uint8Array.of(
  1, 0, 1, 1, 2, 3, 5, 3, 4, 6, 5, 9, 2, 3, 5, 9, // nil, -, bools, bin, ext, floats, uints
  2, 3, 5, 9, 3, 4, 6, 10, 18, 2, 3, 5, 3, 5, 3, 5, // ints, fixext, str, array, map
);
const LENGTH = Uint8Array.of(
  0, 0, 0, 0, 1, 2, 4, 1, 2, 4, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 2, 4, 2, 4,
);
const ITEMS = Uint8Array.of(
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2,
);

/** Where the value that starts at `at` in `body` (well-formed, as decoded) ends. */
function skip(body, at) {
  for (let left = 1; left > 0; left--) {
    const head = body[at];
    if (head <= 0x7f || head >= 0xe0) at += 1;
    else if (head <= 0x8f) {
      at += 1;
      left += 2 * (head & 0x0f);
    } else if (head <= 0x9f) {
      at += 1;
      left += head & 0x0f;
    } else if (head <= 0xbf) at += 1 + (head & 0x1f);
    else {
      const i = head - 0xc0;
      const length = LENGTH[i] === 0 ? 0 : body.readUIntBE(at + 1, LENGTH[i]);
      at += HEADER[i];
      if (ITEMS[i] > 0) left += ITEMS[i] * length;
      else at += length;
    }
  }
  return at;
}

module.exports = { WireFloat, markFloats };
