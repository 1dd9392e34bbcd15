// Batched replies and handlers that block the event loop: a task of a type that
// blocked as it started does not hold back the replies before it ("Batched
// replies" in docs/PROTOCOL.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Manager, frame, payloadOf } from './harness.js';
import { encode } from '@msgpack/msgpack';

/** Starts the example worker (cleaned up after the test) and completes the handshake. */
async function started(t, hello = {}) {
  const m = await Manager.start();
  t.after(() => m.cleanup());
  const ready = await m.hello(hello);
  return { m, ready };
}

/** A task frame, as Manager.task() sends it. */
function task(id, taskType, payload) {
  return frame({ type: 'task', id, task_type: taskType, payload: encode(payload), attempt: 1, timeout_ms: 30000 });
}

for (const concurrency of [undefined, 1]) {
  const named = concurrency === undefined ? 'no concurrency key' : `concurrency ${concurrency}`;
  test(`held replies (${named}): quick tasks' replies are written before a task of a type known to block starts`, async (t) => {
    const { m, ready } = await started(t, concurrency === undefined ? {} : { concurrency });
    assert.equal(ready.batches_replies, true, 'replies are held by default');
    // A first `block` task shows the type blocking (it blocks for longer than the
    // 1 ms hold as it starts).
    m.task(1, 'block', { ms: 20 });
    assert.equal((await m.reply(1)).type, 'result');
    // Quick tasks, then a long block, in one write: one read brings them all.
    m.output.write(Buffer.concat([task(2, 'echo', 'a'), task(3, 'echo', 'b'), task(4, 'block', { ms: 2000 }), task(5, 'echo', 'c')]));
    const blocked = await m.reply(4);
    assert.equal(blocked.type, 'result');
    for (const id of [2, 3]) {
      const reply = await m.reply(id);
      assert.equal(reply.type, 'result', `task ${id}`);
      // Held, the reply would leave with the block's, once the block ends.
      assert.ok(blocked.at - reply.at >= 1000, `task ${id}'s reply came ${blocked.at - reply.at} ms before the block's`);
    }
    assert.equal(payloadOf(await m.reply(5)), 'c', 'the task after the block is answered too');
  });
}

test('held replies: quick tasks after a blocking one are all answered, in order', async (t) => {
  const { m } = await started(t);
  m.task(1, 'block', { ms: 20 });
  await m.reply(1);
  // Many quick tasks, one read: every one is answered.
  const frames = [];
  for (let id = 2; id < 200; id++) frames.push(task(id, 'echo', id));
  m.output.write(Buffer.concat(frames));
  const replies = await m.replies(199);
  assert.deepEqual(
    replies.slice(1).map((r) => payloadOf(r)),
    Array.from({ length: 198 }, (_, i) => i + 2),
  );
});
