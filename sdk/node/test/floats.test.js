// Floats where the protocol wants integers (PROTOCOL.md, Message encoding): a key of
// a manager message sent as a MessagePack float (5.0 for 5) is malformed, as in the
// Rust and Python SDKs, though @msgpack/msgpack decodes 5.0 and 5 alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { encode, decode, ExtData } from '@msgpack/msgpack';
import { Manager, frame, payloadOf } from './harness.js';

const require = createRequire(import.meta.url);
const { FrameReader } = require('../lib/framing.cjs');
const { WireFloat } = require('../lib/floats.cjs');

/** The one message in `frameBytes`, as the worker reads it. */
function read(frameBytes) {
  const messages = new FrameReader().push(frameBytes);
  assert.equal(messages.length, 1);
  return messages[0];
}

/** The keys of `message` whose value is boxed as a float. */
const boxed = (message) => Object.keys(message).filter((key) => message[key] instanceof WireFloat);

test('frame reader: a top-level float, 32 or 64 bits, is boxed and never the number an integer would be', () => {
  const task = { type: 'task', id: 7, task_type: 'echo', payload: encode({ x: 1.5 }), attempt: 1, timeout_ms: 30000 };
  assert.deepEqual(boxed(read(frame(task))), [], 'integers as integers');
  const message = read(frame(task, { id: 64, attempt: 32, timeout_ms: 64 }));
  assert.deepEqual(boxed(message), ['id', 'attempt', 'timeout_ms']);
  assert.deepEqual([message.id.value, message.attempt.value, message.timeout_ms.value], [7, 1, 30000]);
  assert.deepEqual(decode(message.payload), { x: 1.5 }, 'a float inside the payload is the handler’s business');
  const shown = [5, 1.5, -0, 2 ** 64, 1e21].map((value) => String(read(frame({ type: 'x', value }, { value: 64 })).value));
  assert.deepEqual(shown, ['5.0', '1.5', '-0.0', '18446744073709552000.0', '1e+21'], 'shown as a float: 5.0, not 5');
});

/** `size` bytes of 0xa5 (each a fixstr of 5 bytes, read as MessagePack). */
const filled = (size) => new Uint8Array(size).fill(0xa5);

test('frame reader: floats are found past values of every MessagePack type, in maps of 16 keys and more, the last of a repeated key deciding', () => {
  const values = [
    null, true, false, 0, 127, -32, 200, 60000, 2 ** 31, 2n ** 63n, -100, -30000, -(2 ** 31), -(2n ** 63n),
    // Strings, bins and exts of 8, 16 and 32-bit lengths (and fix sizes), with bytes
    // that read as MessagePack values would not add up to the same length.
    '', 'x'.repeat(31), 'é'.repeat(100), 'é'.repeat(150), 'é'.repeat(35000),
    ...[3, 300, 70000].map(filled),
    ...[1, 2, 4, 8, 16, 3, 300, 70000].map((size) => new ExtData(5, filled(size))),
    // Arrays and maps: fix, 16 and 32-bit sizes, nested.
    [], [1, [2, [3.5, { a: 4.5 }]]], { a: { b: 0.25 } },
    ...[20, 70000].map((size) => Array.from({ length: size }, (_, i) => [i + 0.5, i])),
    ...[20, 70000].map((size) => Object.fromEntries(Array.from({ length: size }, (_, i) => [`k${i}`, [i / 2]]))),
  ];
  for (const [index, value] of values.entries()) {
    // A float before and after the value, which is skipped over whole.
    const message = read(frame({ type: 'x', before: 1, value, after: 2, last: 3 }, { before: 64, after: 32 }));
    assert.deepEqual(boxed(message), ['before', 'after'], `value ${index}`);
  }
  for (const size of [40, 70000]) {
    const many = Object.fromEntries(Array.from({ length: size }, (_, i) => [`k${i}`, i]));
    const body = encode({ type: 'x', ...many, k39: 39.5, ['w'.repeat(40)]: 0.5, ü: -1.5 });
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(body.length);
    assert.deepEqual(boxed(read(Buffer.concat([prefix, body]))), ['k39', 'w'.repeat(40), 'ü'], `a map of ${size + 3} keys, str 8 and non-ASCII ones`);
  }
  // {"type": "x", "a": 1.0, "a": 1, "b": 1, "b": 1.0}: the decoder keeps the last of each.
  const repeated = Buffer.from('85a474797065a178a161cb3ff0000000000000a16101a16201a162ca3f800000', 'hex');
  const last = read(Buffer.concat([Buffer.from([0, 0, 0, repeated.length]), repeated]));
  assert.deepEqual([last.a, boxed(last)], [1, ['b']]);
});

test('a hello with version, heartbeat_ms, max_frame or concurrency sent as a float: exit 2 before ready, saying why as Python does', async (t) => {
  const hello = { type: 'hello', version: 1, worker_id: 'worker-1', heartbeat_ms: 1000, max_frame: 16777216 };
  const cases = [
    [hello, { version: 64 }, 'the manager speaks protocol version 1.0, this worker speaks 1'],
    [hello, { heartbeat_ms: 32 }, 'malformed hello message: `heartbeat_ms` must be a uint64'],
    [{ ...hello, heartbeat_ms: -0 }, { heartbeat_ms: 64 }, 'malformed hello message: `heartbeat_ms` must be a uint64'],
    [hello, { max_frame: 64 }, 'malformed hello message: `max_frame` must be a uint32'],
    [{ ...hello, concurrency: 2 }, { concurrency: 32 }, 'hello.concurrency must be an integer from 1 to 4294967295, got 2.0'],
  ];
  for (const [message, floats, why] of cases) {
    const m = await Manager.start();
    t.after(() => m.cleanup());
    m.send(message, floats);
    assert.deepEqual(await m.exit(), { code: 2, signal: null }, why);
    assert.equal(m.frames.length, 0, `${why}: nothing sent, no ready`);
    assert.ok(m.stderr.includes(why), `${why}: ${m.stderr}`);
  }
});

test('a task or cancel with id, attempt or timeout_ms sent as a float: exit 2, nothing more answered; floats elsewhere are fine', async (t) => {
  const task = { type: 'task', id: 7, task_type: 'echo', payload: encode('x'), attempt: 1, timeout_ms: 30000 };
  const cases = [
    [task, { id: 64 }, 'malformed task message: `id` must be a uint64'],
    [{ ...task, id: 2 ** 40 }, { id: 64 }, 'malformed task message: `id` must be a uint64'],
    [task, { attempt: 32 }, 'malformed task message: `attempt` must be a uint32'],
    [task, { timeout_ms: 64 }, 'malformed task message: `timeout_ms` must be a uint64'],
    [{ ...task, timeout_ms: -0 }, { timeout_ms: 64 }, 'malformed task message: `timeout_ms` must be a uint64'],
    [{ type: 'cancel', id: 1 }, { id: 64 }, 'malformed cancel message: `id` must be a uint64'],
  ];
  for (const [message, floats, why] of cases) {
    const m = await Manager.start();
    t.after(() => m.cleanup());
    await m.hello({ heartbeat_ms: 60_000 });
    // Floats in the payload and under a key the worker does not know are no concern of the envelope's.
    m.send({ ...task, id: 2, payload: encode({ x: 0.5 }), weight: 2 }, { weight: 64 });
    assert.deepEqual(payloadOf(await m.reply(2)), { x: 0.5 }, why);
    m.task(1, 'sleep', { ms: 60_000 }); // running: a cancel acted on would answer it
    m.send(message, floats);
    assert.deepEqual(await m.exit(), { code: 2, signal: null }, why);
    assert.deepEqual(m.frames.filter((f) => f.type !== 'heartbeat').map((f) => f.type), ['ready', 'result'], `${why}: nothing more answered`);
    assert.ok(m.stderr.includes(why), `${why}: ${m.stderr}`);
  }
});
