'use strict';
// Frames: a u32 big-endian length, then a MessagePack map of that many bytes (PROTOCOL.md, Framing).

const { Encoder, Decoder } = require('@msgpack/msgpack');
const { ProtocolError } = require('./errors.cjs');
const { markFloats } = require('./floats.cjs');

/** The frame body limit when `CORTEX_MAX_FRAME` is not set: 16 MiB. */
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;

// Envelope keys `id` may be uint64: decode those as bigint, never as a rounded number.
// One encoder and one decoder, reused (they keep their buffers and key caches).
const envelopeEncoder = new Encoder({ useBigInt64: true });
const envelopeDecoder = new Decoder({ useBigInt64: true });

/**
 * The frame (prefix and body) for `message`, an object whose first key is `type`.
 * Its integer fields go out as MessagePack uints: @msgpack/msgpack would write a JS
 * number of 2^32 or more (an id, `rss_bytes` past 4 GiB) as a float64, which the
 * manager refuses, so those are written as bigints.
 */
function encodeFrame(message) {
  const body = envelopeEncoder.encodeSharedRef(withWideInts(message)); // copied into the frame below
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.set(body, 4);
  return frame;
}

/** `message`, or a copy whose integers of 2^32 and more are bigints. */
function withWideInts(message) {
  let copy = null;
  for (const [key, value] of Object.entries(message)) {
    if (typeof value === 'number' && value >= 2 ** 32 && Number.isInteger(value)) {
      copy ??= { ...message };
      copy[key] = BigInt(value);
    }
  }
  return copy ?? message;
}

/** A u64 from the wire as a JS number when it is exactly representable, else a bigint. */
function wireInt(value) {
  if (typeof value === 'bigint' && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  return value;
}

/**
 * Cuts a byte stream into messages. `push(chunk)` returns the complete messages so far;
 * a length over `maxFrame`, a zero length or a body that is not a map with a string
 * `type` throws a ProtocolError. The body is checked against the limit before any of
 * it is buffered. A value the map holds as a float is a WireFloat (see floats.cjs),
 * never a number.
 */
class FrameReader {
  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.chunks = [];
    this.buffered = 0;
    this.need = -1; // body length of the frame being read, -1 while reading its prefix
  }

  /**
   * Bytes of an unfinished frame, its length prefix included once read (non-zero at
   * EOF means the stream ended inside a frame).
   */
  get pending() {
    return this.need < 0 ? this.buffered : 4 + this.buffered;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const messages = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 4) break;
        const length = this.take(4).readUInt32BE(0);
        if (length === 0) throw new ProtocolError('a frame with an empty body');
        if (length > this.maxFrame) {
          throw new ProtocolError(`frame of ${length} bytes exceeds the maximum of ${this.maxFrame}`);
        }
        this.need = length;
      }
      if (this.buffered < this.need) break;
      const body = this.take(this.need);
      this.need = -1;
      messages.push(decodeMessage(body));
    }
    return messages;
  }

  take(n) {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}

function decodeMessage(body) {
  let message;
  try {
    message = envelopeDecoder.decode(body);
  } catch (e) {
    throw new ProtocolError(`malformed message: ${e.message}`);
  }
  if (message === null || typeof message !== 'object' || Array.isArray(message) || typeof message.type !== 'string') {
    throw new ProtocolError('a message must be a map with a string `type`');
  }
  return markFloats(body, message);
}

module.exports = { DEFAULT_MAX_FRAME, FrameReader, encodeFrame, wireInt };
