// Frames the worker writes: integers of 2^32 and more must leave as MessagePack
// uints (PROTOCOL.md: ids and the heartbeat's vitals are uint64).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Decoder } from '@msgpack/msgpack';

const require = createRequire(import.meta.url);
const { encodeFrame } = require('../lib/framing.cjs');

const general = new Decoder({ useBigInt64: true });

test('integers of 2^32 and more leave as uint64, never as the float64 the manager refuses', () => {
  const heartbeat = { type: 'heartbeat', rss_bytes: 5 * 2 ** 30, cpu_ms: 7, tasks_done: 2 ** 40, in_flight: 1 };
  const frame = encodeFrame(heartbeat);
  assert.deepEqual(general.decode(frame.subarray(4)), { ...heartbeat, rss_bytes: 5n * 2n ** 30n, tasks_done: 2n ** 40n });
  assert.ok(!frame.includes(0xcb), 'no float64 marker');
  for (const id of [2 ** 32, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
    for (const reply of [
      { type: 'result', id, payload: Buffer.alloc(3) },
      { type: 'error', id, kind: 'handler', message: 'x', retryable: true },
    ]) {
      const body = encodeFrame(reply).subarray(4);
      assert.equal(general.decode(body).id, BigInt(id), `${reply.type} ${id}`);
      assert.equal(body.indexOf(0xcf), 1 + 5 + 1 + reply.type.length + 3, `${reply.type} ${id}: the id is a uint64`);
    }
  }
  assert.equal(general.decode(encodeFrame({ type: 'result', id: 7, payload: Buffer.alloc(0) }).subarray(4)).id, 7, 'small ids stay small');
});
