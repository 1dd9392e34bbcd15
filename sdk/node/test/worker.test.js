// The SDK against a fake manager (harness.js): handshake, replies, errors,
// cancellation, concurrency, heartbeats, stdout, shutdown, both transports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { encode, decode } from '@msgpack/msgpack';
import { EXAMPLE, Manager, WAIT_MS, frame, payloadOf } from './harness.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const EXTRA = path.join(FIXTURES, 'extra-worker.mjs');

/** Starts a worker (cleaned up after the test) and completes the handshake. */
async function started(t, options = {}, hello = {}) {
  const m = await Manager.start(options.script, options);
  t.after(() => m.cleanup());
  const ready = await m.hello(hello);
  return { m, ready };
}

for (const transport of ['stdio', 'fifo']) {
  test(`[${transport}] handshake: ready with version, pid and sorted task types`, async (t) => {
    const { m, ready } = await started(t, { transport });
    assert.equal(ready.version, 1);
    assert.equal(ready.pid, m.child.pid);
    assert.deepEqual(ready.task_types, ['block', 'crash', 'echo', 'fail', 'noisy', 'sleep', 'spin']);
    assert.equal(m.frames[0].type, 'ready', 'ready is the first frame');
  });

  test(`[${transport}] echo: payloads of every shape, and a 4 MiB one, come back unchanged`, async (t) => {
    const { m } = await started(t, { transport });
    const payloads = [{ msg: 'hi', n: 42, nested: { list: [1, 2.5, null, true] } }, 'ünïcödé', [1, 2, 3], null, -7];
    payloads.forEach((p, i) => m.task(i + 1, 'echo', p));
    for (const [i, p] of payloads.entries()) {
      const reply = await m.reply(i + 1);
      assert.equal(reply.type, 'result');
      assert.deepEqual(payloadOf(reply), p);
    }
    const big = 'x'.repeat(4 * 1024 * 1024);
    m.task(100, 'echo', { big });
    const reply = await m.reply(100);
    assert.equal(reply.type, 'result', JSON.stringify(reply.message));
    assert.equal(payloadOf(reply).big.length, big.length);
  });

  test(`[${transport}] stdout from a handler goes to stderr, never into the frame stream`, async (t) => {
    const { m } = await started(t, { transport });
    m.task(1, 'noisy', { a: 1 });
    assert.deepEqual(payloadOf(await m.reply(1)), { a: 1 });
    m.task(2, 'echo', 'after the noise');
    assert.equal(payloadOf(await m.reply(2)), 'after the noise', 'the stream is still in sync');
    assert.match(m.stderr, /noisy handler: console.log/);
    assert.match(m.stderr, /noisy handler: process.stdout.write/);
    assert.equal(m.stdoutText, '', 'nothing on stdout');
  });

  test(`[${transport}] end of input: the worker exits 0 at once, without waiting for a running task`, async (t) => {
    const { m } = await started(t, { transport });
    m.task(1, 'sleep', { ms: 60_000 });
    await m.next((f) => f.type === 'heartbeat' || f.type === 'ready');
    m.closeInput();
    assert.deepEqual(await m.exit(), { code: 0, signal: null });
    assert.equal(m.frames.filter((f) => f.type === 'result' || f.type === 'error').length, 0);
  });

  test(`[${transport}] end of input after a graceful shutdown: the running and the waiting task finish and are answered, then exit 0`, async (t) => {
    const { m } = await started(t, { transport }, { concurrency: 1 });
    m.task(1, 'sleep', { ms: 300 });
    m.task(2, 'echo', 'waited for a slot');
    m.send({ type: 'shutdown', graceful: true });
    m.closeInput();
    assert.deepEqual(await m.exit(), { code: 0, signal: null });
    const replies = await m.replies(2);
    assert.deepEqual(
      replies.map((r) => [Number(r.id), r.type, r.type === 'result' ? payloadOf(r) : r.kind]),
      [[1, 'result', { slept_ms: 300 }], [2, 'result', 'waited for a slot']],
    );
  });

  test(`[${transport}] output broken during a graceful drain whose input ended: exit 0 at once, not when the task ends`, async (t) => {
    const { m } = await started(t, { transport }, { heartbeat_ms: 100 });
    m.task(1, 'sleep', { ms: 60_000 });
    m.send({ type: 'shutdown', graceful: true });
    m.closeInput();
    // The manager stops reading: the next heartbeat's write fails.
    m.input.destroy();
    assert.deepEqual(await m.exit(), { code: 0, signal: null });
  });
}

test('ids: small, 2^40 and above 2^53 (a bigint) are echoed exactly', async (t) => {
  const { m } = await started(t);
  for (const id of [0, 2 ** 40, 2n ** 63n + 5n]) {
    m.task(id, 'echo', 'x');
    const reply = await m.next((f) => f.type === 'result' && BigInt(f.id) === BigInt(id));
    assert.equal(BigInt(reply.id), BigInt(id));
  }
});

test('errors: retryable, FatalError, retryable:false, bare values, custom kinds, bad input, unknown type', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  const { m: ex } = await started(t);
  ex.task(1, 'fail', { times: 1 });
  assert.deepEqual(pick(await ex.reply(1)), ['error', 'handler', 'failing attempt 1 of 1', true]);
  ex.task(2, 'fail', { times: 1 }, { attempt: 2 });
  assert.deepEqual(payloadOf(await ex.reply(2)), { attempt: 2 });
  ex.task(3, 'fail', { fatal: true });
  assert.deepEqual(pick(await ex.reply(3)), ['error', 'handler', 'fatal failure on attempt 1', false]);

  m.task(1, 'plain-fatal', null);
  assert.deepEqual(pick(await m.reply(1)), ['error', 'handler', 'no retry can fix this', false]);
  m.task(2, 'not-an-error', null);
  assert.deepEqual(pick(await m.reply(2)), ['error', 'handler', 'a bare string', true]);
  m.task(3, 'bad', null);
  assert.deepEqual(pick(await m.reply(3)), ['error', 'bad_input', 'need a name', false]);
  m.task(4, 'custom', null);
  assert.deepEqual(pick(await m.reply(4)), ['error', 'quota', 'multi line', false]);
  m.task(5, 'nope', null);
  assert.deepEqual(pick(await m.reply(5)), ['error', 'unknown_type', 'no handler for task type "nope"', false]);
  m.send({ type: 'task', id: 6, task_type: 'echo', payload: new Uint8Array([0xc1]), attempt: 1, timeout_ms: 0 });
  const bad = await m.reply(6);
  assert.deepEqual([bad.kind, bad.retryable], ['bad_input', false]);
  m.task(7, 'nothing', null);
  assert.equal(payloadOf(await m.reply(7)), null, 'undefined becomes nil');
  m.task(8, 'echo');
  assert.equal(payloadOf(await m.reply(8)), null, 'an empty payload reads as null');
});

test('ctx: id, task type, attempt, deadline from timeout_ms, log frames', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  const before = Date.now();
  m.task(9, 'ctx', null, { attempt: 3, timeout_ms: 5000 });
  const out = payloadOf(await m.reply(9));
  assert.deepEqual([out.id, out.taskType, out.attempt], ['9', 'ctx', 3]);
  assert.ok(out.deadline >= before + 5000 && out.deadline <= Date.now() + 5000, `deadline ${out.deadline}`);
  assert.ok(out.remaining > 0 && out.remaining <= 5000);
  const log = await m.next((f) => f.type === 'log');
  assert.deepEqual([log.level, log.message], ['info', 'task 9: hello from the handler']);
  m.task(10, 'ctx', null, { timeout_ms: 0 });
  const unlimited = payloadOf(await m.reply(10));
  assert.equal(unlimited.deadline, null, 'timeout_ms 0: no deadline');
});

test('result_too_large: a result that does not fit max_frame is an error, and the link lives on', async (t) => {
  const { m } = await started(t, { script: EXTRA }, { max_frame: 1024 });
  // A result of n bytes (bin 16: n + 3) makes a body of n + 31 bytes (the envelope: 28).
  m.task(1, 'bytes', { n: 1024 - 31 });
  assert.equal((await m.reply(1)).type, 'result', 'a result whose frame is exactly max_frame fits');
  m.task(2, 'bytes', { n: 1024 - 30 });
  assert.deepEqual([(await m.reply(2)).kind, (await m.reply(2)).retryable], ['result_too_large', false]);
  m.task(3, 'echo', 'still alive');
  assert.equal(payloadOf(await m.reply(3)), 'still alive');
});

test('replies within max_frame: a long error is cut, a value with no string form is named, a long log is refused', async (t) => {
  const { m } = await started(t, { script: EXTRA }, { max_frame: 1024 });
  m.task(1, 'long-error', { n: 2000 });
  const cut = await m.reply(1);
  assert.deepEqual([cut.type, cut.kind, cut.retryable], ['error', 'handler', true]);
  assert.match(cut.message, /^x+ … \(cut to fit a frame of 1024 bytes\)$/);
  m.task(2, 'no-string', null);
  assert.deepEqual(pick(await m.reply(2)), ['error', 'handler', '[object Object]', true]);
  m.task(3, 'long-log', { n: 2000 });
  const refused = await m.reply(3);
  assert.deepEqual([refused.type, refused.kind], ['error', 'handler']);
  assert.match(refused.message, /over max_frame 1024/);
  m.task(4, 'echo', 'still alive');
  assert.equal(payloadOf(await m.reply(4)), 'still alive');
  assert.ok(!m.frames.some((f) => f.type === 'log'), 'no log frame over max_frame was sent');
});

test('cancel: the signal fires, the reply is `cancelled`, unknown ids are ignored', async (t) => {
  const { m } = await started(t);
  m.task(1, 'sleep', { ms: 60_000 });
  m.send({ type: 'cancel', id: 777 });
  await m.next((f) => f.type === 'heartbeat');
  const at = Date.now();
  m.send({ type: 'cancel', id: 1 });
  const reply = await m.reply(1);
  assert.deepEqual([reply.type, reply.kind, reply.retryable], ['error', 'cancelled', false]);
  assert.ok(Date.now() - at < 10_000);
  m.task(2, 'echo', 'alive');
  assert.equal(payloadOf(await m.reply(2)), 'alive');
});

test('concurrency from hello: one at a time in arrival order; a waiting task is cancelled at once', async (t) => {
  const { m } = await started(t, {}, { concurrency: 1 });
  m.task(1, 'sleep', { ms: 400 });
  m.task(2, 'echo', 'second');
  m.task(3, 'echo', 'third');
  m.send({ type: 'cancel', id: 3 });
  const order = [];
  for (const id of [1, 2, 3]) m.reply(id).then((r) => order.push([id, r.type, r.kind]));
  await Promise.all([1, 2, 3].map((id) => m.reply(id)));
  assert.deepEqual(order, [[3, 'error', 'cancelled'], [1, 'result', undefined], [2, 'result', undefined]]);
  const cancelled = await m.reply(3);
  assert.equal(cancelled.retryable, false);
});

test('held replies: a handler that went pending has its reply written before the next task blocks the thread', async (t) => {
  const { m, ready } = await started(t, {}, { concurrency: 1 });
  assert.equal(ready.batches_replies, true, 'replies are held by default');
  m.task(1, 'sleep', { ms: 100 });
  m.task(2, 'block', { ms: 2000 });
  const [first, second] = [await m.reply(1), await m.reply(2)];
  assert.equal(first.type, 'result');
  // Held, the first reply would leave with the second, once the block ends.
  assert.ok(second.at - first.at >= 1000, `the first reply came ${second.at - first.at} ms before the second`);
});

test('held replies: a task that waited for I/O, started from a timer callback, is written before a blocking task', async (t) => {
  const { m } = await started(t, { script: EXTRA }, { concurrency: 1 });
  // Each starts as the one before finishes: `stat` in a timer's callback (it
  // awaits the thread pool once), `block` in the callback of that I/O, and
  // holds the event loop.
  m.task(1, 'sleep', { ms: 10 });
  m.task(2, 'stat', null);
  m.task(3, 'block', { ms: 2000 });
  const blocked = await m.reply(3);
  for (const id of [1, 2]) {
    const reply = await m.reply(id);
    assert.equal(reply.type, 'result', `task ${id}`);
    assert.ok(blocked.at - reply.at >= 1000, `task ${id}'s reply came ${blocked.at - reply.at} ms before the block's`);
  }
});

test('a process the worker starts that loads the SDK keeps its stdout', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  m.task(1, 'child', null);
  assert.equal(payloadOf(await m.reply(1)), 'from the child\n');
});

test('a TaskError whose retryable is set to null after construction keeps its class default', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  m.task(1, 'null-retryable', null);
  const reply = await m.reply(1);
  assert.deepEqual([reply.kind, reply.retryable], ['handler', true]);
});

test('a TaskError whose retryable is not a boolean is answered with one, and the worker goes on', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  m.task(1, 'odd-retryable', { how: 'zero' });
  m.task(2, 'odd-retryable', { how: 'function' });
  m.task(3, 'echo', 'still here');
  const [zero, fn] = [await m.reply(1), await m.reply(2)];
  assert.deepEqual([zero.kind, zero.retryable, fn.kind, fn.retryable], ['handler', false, 'handler', true]);
  assert.equal(payloadOf(await m.reply(3)), 'still here');
});

test('a worker that prints after importing the SDK, before run(): the prints go to stderr, ready comes first', async (t) => {
  for (const transport of ['stdio', 'fifo']) {
    const { m } = await started(t, { script: path.join(FIXTURES, 'banner-worker.mjs'), transport });
    m.task(1, 'echo', 'after the banner');
    assert.equal(payloadOf(await m.reply(1)), 'after the banner', transport);
    assert.match(m.stderr, /loading the model/, transport);
    assert.match(m.stderr, /a raw write to stdout/, transport);
    assert.equal(m.trailing(), 0, `${transport}: no stray bytes on the stream`);
  }
});

test('without a concurrency key, tasks run at once', async (t) => {
  const { m } = await started(t);
  m.task(1, 'sleep', { ms: 60_000 });
  m.task(2, 'echo', 'not blocked by the sleeper');
  assert.equal(payloadOf(await m.reply(2)), 'not blocked by the sleeper');
});

test('hello.concurrency 0, nil, negative, not an integer or past uint32: exit 2 before ready, saying why', async (t) => {
  for (const concurrency of [0, null, -1, 1.5, '2', 2 ** 32]) {
    const m = await Manager.start();
    t.after(() => m.cleanup());
    m.send({ type: 'hello', version: 1, worker_id: 'worker-1', heartbeat_ms: 1000, max_frame: 16777216, concurrency });
    assert.deepEqual(await m.exit(), { code: 2, signal: null }, `concurrency ${JSON.stringify(concurrency)}`);
    assert.equal(m.frames.length, 0, `concurrency ${JSON.stringify(concurrency)}: nothing sent, no ready`);
    assert.match(m.stderr, /hello\.concurrency must be an integer from 1 to 4294967295, got /);
  }
});

test('a hello without heartbeat_ms or max_frame, or with one of another type: exit 2 before ready, saying why', async (t) => {
  const hello = { type: 'hello', version: 1, worker_id: 'worker-1', heartbeat_ms: 1000, max_frame: 16777216 };
  const cases = [
    [{ ...hello, heartbeat_ms: undefined }, 'heartbeat_ms'],
    [{ ...hello, heartbeat_ms: '1000' }, 'heartbeat_ms'],
    [{ ...hello, max_frame: undefined }, 'max_frame'],
    [{ ...hello, max_frame: 2 ** 32 }, 'max_frame'],
  ];
  for (const [message, key] of cases) {
    const m = await Manager.start();
    t.after(() => m.cleanup());
    m.send(message);
    assert.deepEqual(await m.exit(), { code: 2, signal: null }, key);
    assert.equal(m.frames.length, 0, `${key}: nothing sent, no ready`);
    assert.match(m.stderr, new RegExp(`malformed hello message: \`${key}\` must be a`));
  }
});

test('heartbeat_ms 0: no heartbeat at all, and a task is still answered', async (t) => {
  const { m } = await started(t, {}, { heartbeat_ms: 0 });
  // The window from ready to this reply would hold 1 500 beats at 1 ms, and one at 1 s.
  m.task(1, 'sleep', { ms: 1500 });
  assert.deepEqual(payloadOf(await m.reply(1)), { slept_ms: 1500 });
  assert.deepEqual(m.frames.map((f) => f.type), ['ready', 'result'], 'no heartbeat');
});

test('heartbeats: on the hello period, with vitals', async (t) => {
  const { m } = await started(t, {}, { heartbeat_ms: 50 });
  m.task(1, 'sleep', { ms: 60_000 });
  const hb = await m.next((f) => f.type === 'heartbeat' && f.in_flight === 1);
  assert.ok(hb.rss_bytes > 1_000_000, `rss ${hb.rss_bytes}`);
  assert.ok(hb.cpu_ms >= 0);
  assert.equal(hb.tasks_done, 0);
  await m.next((f, i) => m.frames.filter((g) => g.type === 'heartbeat').length >= 3);
});

test('a handler that blocks the event loop stops heartbeats; handleInThread keeps them flowing', async (t) => {
  const { m } = await started(t, {}, { heartbeat_ms: 50 });
  await m.next((f) => f.type === 'heartbeat');
  const beats = (from, to) => m.frames.slice(from, to).filter((f) => f.type === 'heartbeat').length;

  let start = m.frames.length;
  m.task(1, 'block', { ms: 1000 });
  await m.reply(1);
  let end = m.frames.findIndex((f) => Number(f.id) === 1 && f.type === 'result');
  // Twenty periods passed; at most one heartbeat slipped in before the task was read.
  assert.ok(beats(start, end) <= 1, `${beats(start, end)} heartbeats while blocked`);

  start = m.frames.length;
  m.task(2, 'spin', { ms: 1000 });
  assert.deepEqual(payloadOf(await m.reply(2)), { spun_ms: 1000 });
  end = m.frames.findIndex((f) => Number(f.id) === 2 && f.type === 'result');
  assert.ok(beats(start, end) >= 3, `${beats(start, end)} heartbeats while the thread spun`);
});

test('handleInThread: a thread is ended once it answers, even when its module keeps it open', async (t) => {
  const { m, ready } = await started(t, { script: EXTRA });
  const threads = () => fs.readdirSync(`/proc/${ready.pid}/task`).length;
  const before = threads();
  for (let id = 1; id <= 20; id++) {
    m.task(id, 'interval', id);
    assert.equal(payloadOf(await m.reply(id)), id);
  }
  // A thread's end is asked for with its result; it may take a moment.
  const deadline = Date.now() + 10_000;
  while (threads() > before + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(threads() <= before + 2, `${threads() - before} threads more after 20 tasks`);
});

test('handleInThread: a cancel terminates the thread', async (t) => {
  const { m } = await started(t);
  m.task(1, 'spin', { ms: 60_000 });
  await m.next((f) => f.type === 'heartbeat');
  m.send({ type: 'cancel', id: 1 });
  const reply = await m.reply(1);
  assert.deepEqual([reply.kind, reply.retryable], ['cancelled', false]);
});

test('shutdown graceful: running tasks finish and are answered, then exit 0', async (t) => {
  const { m } = await started(t);
  m.task(1, 'sleep', { ms: 300 });
  m.send({ type: 'shutdown', graceful: true });
  assert.deepEqual(await m.exit(), { code: 0, signal: null });
  assert.deepEqual(payloadOf(await m.reply(1)), { slept_ms: 300 });
});

test('shutdown graceful: a task that arrives after it is not run, and is answered `shutting_down` (retryable) at once', async (t) => {
  const { m } = await started(t);
  m.task(1, 'sleep', { ms: 60_000 });
  m.send({ type: 'shutdown', graceful: true });
  m.task(2, 'echo', 'too late');
  assert.deepEqual(pick(await m.reply(2)), ['error', 'shutting_down', 'the worker is shutting down', true]);
  assert.equal(m.replyCount, 1, 'task 1 still runs');
  m.send({ type: 'cancel', id: 1 });
  assert.deepEqual([(await m.reply(1)).type, (await m.reply(1)).kind], ['error', 'cancelled']);
  assert.deepEqual(await m.exit(), { code: 0, signal: null });
  assert.equal(m.replyCount, 2, 'one reply per task');
});

test('shutdown not graceful: exit 0 now', async (t) => {
  const { m } = await started(t);
  m.task(1, 'sleep', { ms: 60_000 });
  m.send({ type: 'shutdown', graceful: false });
  assert.deepEqual(await m.exit(), { code: 0, signal: null });
});

test('a crash mid-task ends the process with its status', async (t) => {
  const { m } = await started(t);
  m.task(1, 'crash', { code: 5 });
  assert.deepEqual(await m.exit(), { code: 5, signal: null });
});

test('a manager speaking another version: exit 2, nothing sent', async (t) => {
  const m = await Manager.start();
  t.after(() => m.cleanup());
  m.send({ type: 'hello', version: 2, worker_id: 'worker-1', heartbeat_ms: 1000, max_frame: 1024 });
  assert.deepEqual(await m.exit(), { code: 2, signal: null });
  assert.equal(m.frames.length, 0);
  assert.match(m.stderr, /protocol version 2/);
});

test('an oversized frame from the manager: exit 2 before reading its body', async (t) => {
  const m = await Manager.start(undefined, { env: { CORTEX_MAX_FRAME: '100' } });
  t.after(() => m.cleanup());
  m.output.write(Buffer.from([0, 0, 1, 0]));
  assert.deepEqual(await m.exit(), { code: 2, signal: null });
  assert.match(m.stderr, /frame of 256 bytes exceeds the maximum of 100/);
});

test('an unknown transport: exit 2 with a message', async (t) => {
  const m = await Manager.start(undefined, { env: { CORTEX_TRANSPORT: 'carrier-pigeon' } });
  t.after(() => m.cleanup());
  assert.deepEqual(await m.exit(), { code: 2, signal: null });
  assert.match(m.stderr, /unsupported CORTEX_TRANSPORT "carrier-pigeon"/);
});

test('integers: safe ones stay integers both ways, wider ones are bigints, none is rounded or sent as a float', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  // 64-bit formats, as a Rust or Python manager may write them.
  const wide = { ts: 1700000000000n, small: 5n, big: 2n ** 60n + 1n, negative: -(2n ** 40n), low: -(2n ** 63n) };
  m.send({ type: 'task', id: 1, task_type: 'ints', payload: encode(wide, { useBigInt64: true }), attempt: 1, timeout_ms: 0 });
  const reply = await m.reply(1);
  assert.equal(reply.type, 'result', reply.message);
  // With useBigInt64 every 64-bit integer decodes as a bigint, and a float64 as a number.
  const out = decode(reply.payload, { useBigInt64: true });
  assert.deepEqual(out.seen, { ts: 'number', small: 'number', big: 'bigint', negative: 'number', low: 'bigint' });
  assert.deepEqual(out.back, { ...wide, small: 5 }, 'echoed exactly');
  assert.equal(out.ts, 1700000000000n, 'a uint64, not the float 1700000000000.0');
  assert.equal(out.negative, -(2n ** 40n), 'an int64');
  assert.equal(out.unsafe, 2 ** 60, 'a number past 2^53 stays a float64');
  assert.deepEqual([out.top, out.bottom], [2n ** 64n - 1n, -(2n ** 63n)], 'bigints at both ends of the 64-bit range');
  m.task(2, 'too-wide', null);
  const refused = await m.reply(2);
  assert.deepEqual([refused.type, refused.kind, refused.retryable], ['error', 'handler', false]);
  assert.match(refused.message, /cannot be encoded as MessagePack: .*18446744073709551616/);
});

/** Whether a frame body holds a UTF-16 surrogate encoded as UTF-8 (ED A0..BF ..), which no UTF-8 decoder accepts. */
function encodesSurrogate(body) {
  for (let i = body.indexOf(0xed); i >= 0; i = body.indexOf(0xed, i + 1)) {
    if (body[i + 1] >= 0xa0 && body[i + 1] <= 0xbf) return true;
  }
  return false;
}

test('strings the SDK writes are well-formed: lone surrogates become U+FFFD, a cut never splits a pair', async (t) => {
  const { m } = await started(t, { script: EXTRA }, { max_frame: 1024 });
  m.task(1, 'half-emoji', null);
  assert.deepEqual(pick(await m.reply(1)), ['error', 'handler', 'ok \uFFFD', true]);
  m.task(2, 'half-emoji-kind', null);
  assert.deepEqual(pick(await m.reply(2)), ['error', 'quota \uFFFD', 'low \uFFFD alone', false]);
  m.task(3, 'half-emoji-log', null);
  assert.equal(payloadOf(await m.reply(3)), 'logged');
  assert.equal((await m.next((f) => f.type === 'log')).message, 'task 3: half \uFFFD');
  // One of the two prefixes puts the cut between the halves of an emoji.
  for (const [id, prefix] of [[4, ''], [5, 'x']]) {
    m.task(id, 'emoji-error', { prefix, n: 400 });
    const cut = await m.reply(id);
    assert.match(cut.message, /^x?(😀)+ … \(cut to fit a frame of 1024 bytes\)$/u, `prefix ${JSON.stringify(prefix)}`);
  }
  m.task(6, 'echo', 'still alive');
  assert.equal(payloadOf(await m.reply(6)), 'still alive');
  // The frames with the handlers' text. (Not ready and heartbeats: their integers'
  // bytes may look like a surrogate, e.g. a pid ending in 0xED before the next key.)
  for (const f of m.frames.filter((g) => g.type === 'error' || g.type === 'log')) {
    assert.ok(!encodesSurrogate(f.body), `a ${f.type} frame with invalid UTF-8`);
  }
});

test('handleInThread: a result that cannot be cloned back is a handler error, not retryable, naming the value', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  m.task(1, 'unclonable', null);
  const reply = await m.reply(1);
  assert.deepEqual([reply.type, reply.kind, reply.retryable], ['error', 'handler', false]);
  assert.match(reply.message, /could not be cloned/);
  assert.match(reply.message, /\(\) => 1/);
});

test('heartbeat_ms of 2^31 and more: the longest period Node allows, not a 1 ms flood', async (t) => {
  for (const heartbeat_ms of [2 ** 31, 2n ** 40n, 2n ** 64n - 1n]) {
    const { m } = await started(t, { script: EXTRA }, { heartbeat_ms });
    m.task(1, 'echo', 'x');
    await m.reply(1);
    await sleep(200);
    assert.equal(m.frames.filter((f) => f.type === 'heartbeat').length, 0, `heartbeat_ms ${heartbeat_ms}`);
    assert.doesNotMatch(m.stderr, /TimeoutOverflowWarning/);
    m.cleanup();
  }
});

test('cancel: a TaskError thrown after the cancel is answered `cancelled` too', async (t) => {
  const { m } = await started(t, { script: EXTRA });
  m.task(1, 'retry-after-cancel', null);
  m.send({ type: 'cancel', id: 1 });
  assert.deepEqual(pick(await m.reply(1)), ['error', 'cancelled', 'cancelled (gave up after the cancel)', false]);
});

function pick(reply) {
  return [reply.type, reply.kind, reply.message, reply.retryable];
}

test('[fifo] a manager that dies before hello: the worker notices and exits', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cortex-node-orphan-'));
  const to = path.join(dir, 'to.fifo');
  const from = path.join(dir, 'from.fifo');
  execFileSync('mkfifo', ['-m', '600', to, from]);
  // Our ends stay open, so the worker sees no EOF: only its parent's death tells it.
  const readFd = fs.openSync(from, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  let pid = 0;
  t.after(() => {
    if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    fs.closeSync(readFd);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // An intermediate shell starts the worker, and exits when we close its stdin: once
  // the worker has opened its read end (and so knows its parent), it is orphaned.
  const env = { ...process.env, CORTEX_TRANSPORT: 'fifo', CORTEX_FIFO_TO_WORKER: to, CORTEX_FIFO_FROM_WORKER: from };
  const shell = spawn('sh', ['-c', `"${process.execPath}" "${EXAMPLE}" </dev/null >/dev/null 2>&1 & echo $!; read _`], {
    env,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  pid = Number(await new Promise((resolve) => shell.stdout.once('data', (d) => resolve(String(d).trim()))));
  assert.ok(pid > 0);
  const opened = Date.now() + WAIT_MS;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(to, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      break;
    } catch (e) {
      assert.equal(e.code, 'ENXIO');
      assert.ok(Date.now() < opened, 'the worker opened its FIFO');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  shell.stdin.end();
  await new Promise((resolve) => shell.on('exit', resolve));
  const deadline = Date.now() + WAIT_MS;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(alive(pid), false, 'the orphaned worker exited');
});

for (const transport of ['stdio', 'fifo']) {
  test(`[${transport}] a worker started through a wrapper is no orphan: it serves on past many checks of its parent`, async (t) => {
    // The manager (this test, CORTEX_MANAGER_PID) is not the worker's parent: the shell is.
    const env = { CORTEX_MANAGER_PID: String(process.pid) };
    const { m, ready } = await started(t, { transport, wrapped: true, env }, { heartbeat_ms: 20 });
    assert.notEqual(ready.pid, m.child.pid, "the wrapper, not the worker, is the test's child");
    // Each heartbeat follows a check that the manager lives (Worker.startHeartbeat).
    await m.next(() => m.frames.filter((f) => f.type === 'heartbeat').length >= 5);
    m.task(1, 'echo', 'still here');
    assert.equal(payloadOf(await m.reply(1)), 'still here');
    m.closeInput();
    assert.deepEqual(await m.exit(), { code: 0, signal: null });
  });
}

test('[fifo] a worker whose manager pid names no process exits 2 before hello, not at the deadline', async (t) => {
  // Orphaned before it could look: its parent (this test) never changes, but the
  // pid its manager left names no process.
  const gone = spawn('true');
  await new Promise((resolve) => gone.on('exit', resolve));
  const m = await Manager.start(EXAMPLE, { transport: 'fifo', env: { CORTEX_MANAGER_PID: String(gone.pid) } });
  t.after(() => m.cleanup());
  assert.deepEqual(await m.exit(), { code: 2, signal: null });
  assert.match(m.stderr, /the manager went away/);
});

test('a manager message without a key the worker needs is a broken link: exit 2, nothing answered', async (t) => {
  const task = { type: 'task', id: 7, task_type: 'echo', payload: new Uint8Array(0), attempt: 1, timeout_ms: 0 };
  const cases = {
    'shutdown without graceful': { type: 'shutdown' },
    'shutdown with a graceful that is no bool': { type: 'shutdown', graceful: 1 },
    'task without id': { ...task, id: undefined },
    'task with a text id': { ...task, id: '7' },
    'task with a negative id': { ...task, id: -1 },
    'task without timeout_ms': { ...task, timeout_ms: undefined },
    'task with a text payload': { ...task, payload: '' },
    'task with an attempt past uint32': { ...task, attempt: 2n ** 32n },
    'cancel without id': { type: 'cancel' },
  };
  for (const [name, message] of Object.entries(cases)) {
    const m = await Manager.start();
    t.after(() => m.cleanup());
    await m.hello();
    m.send(message);
    assert.deepEqual(await m.exit(), { code: 2, signal: null }, name);
    assert.deepEqual(m.frames.map((f) => f.type).filter((type) => type !== 'heartbeat'), ['ready'], `${name}: nothing answered`);
    assert.match(m.stderr, new RegExp(`malformed ${message.type} message: \`\\w+\` must be a`), name);
  }
});

test('an error reply whose kind alone is over max_frame: kind `handler`, the same retryable, within the frame', async (t) => {
  const { m } = await started(t, { script: EXTRA }, { max_frame: 1024 });
  m.task(1, 'huge-kind', { retryable: false });
  assert.deepEqual(pick(await m.reply(1)), ['error', 'handler', 'the error reply does not fit in a frame', false]);
  m.task(2, 'huge-kind', { retryable: true });
  assert.deepEqual(pick(await m.reply(2)), ['error', 'handler', 'the error reply does not fit in a frame', true]);
  m.task(3, 'echo', 'still alive');
  assert.equal(payloadOf(await m.reply(3)), 'still alive');
  for (const f of m.frames) assert.ok(f.body.length <= 1024, `a ${f.type} frame of ${f.body.length} bytes`);
});

test('once the worker stops, a waiting task never starts, even when a running one settles after', async () => {
  const { Worker } = await import('../lib/worker.cjs');
  let release;
  const ran = [];
  const worker = new Worker({ holdReplies: 0 })
    .handle('held', () => new Promise((resolve) => (release = resolve)))
    .handle('later', (payload, ctx) => ran.push(ctx.id));
  const input = new PassThrough();
  const link = {
    transport: 'test',
    maxFrame: 1 << 20,
    input,
    write() {},
    pending: () => 0,
    flush: () => Promise.resolve(),
    opened() {},
  };
  const stopped = worker.serve(link);
  const hello = { type: 'hello', version: 1, worker_id: 'worker-1', heartbeat_ms: 0, max_frame: 1 << 20, concurrency: 1 };
  const task = (id, taskType) => ({ type: 'task', id, task_type: taskType, payload: new Uint8Array(0), attempt: 1, timeout_ms: 0 });
  // Task 1 runs, task 2 waits for its slot, and the worker is told to stop now.
  input.write(Buffer.concat([frame(hello), frame(task(1, 'held')), frame(task(2, 'later')), frame({ type: 'shutdown', graceful: false })]));
  assert.equal(await stopped, 0);
  assert.equal(typeof release, 'function', 'task 1 was running');
  // Task 1 settles while the worker is on its way out (run() flushing the link).
  release('done');
  await new Promise((resolve) => setImmediate(resolve)); // every promise callback has run
  assert.deepEqual(ran, [], 'task 2 did not start');
});

/** Whether `pid` runs (a zombie waiting for its reaper counts as gone). */
function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}
