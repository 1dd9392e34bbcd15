// Frames cut at every awkward place, or 1 200 of them in one read, through the frame
// reader, an in-process Worker on a scripted link and a worker process: each task
// gets exactly one reply with its id and payload, and replies that are ready
// together leave in one write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { encode, decode } from '@msgpack/msgpack';
import { Worker } from '../index.mjs';
import { Manager, WAIT_MS, frame, payloadOf } from './harness.js';

const require = createRequire(import.meta.url);
const { FrameReader } = require('../lib/framing.cjs');

const N = 1200;
const payload = (i) => ({ i, pad: 'x'.repeat(i % 37) });

function taskFrame(id, taskType, value = payload(id)) {
  return frame({ type: 'task', id, task_type: taskType, payload: encode(value), attempt: 1, timeout_ms: 30000 });
}

/** Tasks 1..N, odd ones `echo`, even ones `later` (answers after a turn of the event loop). */
function taskFrames() {
  return Array.from({ length: N }, (_, k) => taskFrame(k + 1, (k + 1) % 2 ? 'echo' : 'later'));
}

/**
 * Cut offsets in the concatenation of `frames`: frames `first` .. `first + 2` one byte
 * per read, then length prefixes split after 1, 2 and 3 bytes, a body split in two,
 * one read of 1 000 whole frames plus half a prefix, and the rest in one read.
 */
function awkwardCuts(frames, first) {
  const starts = [];
  let at = 0;
  for (const f of frames) {
    starts.push(at);
    at += f.length;
  }
  const cuts = [];
  for (let i = first; i < first + 3; i++) {
    for (let c = starts[i] + 1; c <= starts[i] + frames[i].length; c++) cuts.push(c);
  }
  for (let k = 0; k < 3; k++) cuts.push(starts[first + 3 + k] + k + 1);
  const body = first + 6;
  cuts.push(starts[body] + 4 + Math.floor((frames[body].length - 4) / 2));
  cuts.push(starts[body + 1000] + 2);
  return [...new Set(cuts)].filter((c) => c > 0 && c < at).sort((a, b) => a - b);
}

function cut(data, cuts) {
  const bounds = [0, ...cuts, data.length];
  return bounds.slice(1).map((end, k) => data.subarray(bounds[k], end));
}

/** The messages in a run of whole frames. */
function splitFrames(data) {
  const out = [];
  for (let at = 0; at < data.length; ) {
    const n = data.readUInt32BE(at);
    out.push(decode(data.subarray(at + 4, at + 4 + n), { useBigInt64: true }));
    at += 4 + n;
  }
  return out;
}

/** A link whose input the test feeds chunk by chunk and whose writes it records. */
function scriptedLink() {
  const input = new EventEmitter();
  input.pause = () => {};
  const writes = [];
  return {
    transport: 'scripted',
    maxFrame: 16 * 1024 * 1024,
    input,
    writes,
    write(data) {
      writes.push(Buffer.from(data));
    },
    pending: () => 0,
    flush: () => Promise.resolve(),
    opened() {},
  };
}

function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function testWorker() {
  const worker = new Worker();
  worker.handle('echo', async (value) => value);
  worker.handle('later', async (value) => {
    await new Promise((resolve) => setImmediate(resolve));
    return value;
  });
  return worker;
}

/** Serves `chunks` (each its own read, a turn of the event loop apart) to an in-process worker. */
async function serveScripted(worker, chunks) {
  const link = scriptedLink();
  const done = worker.serve(link);
  try {
    for (const chunk of chunks) {
      link.input.emit('data', chunk);
      await new Promise((resolve) => setImmediate(resolve));
    }
    const code = await bounded(done, 'the worker did not stop');
    return { code, writes: link.writes, messages: link.writes.flatMap(splitFrames) };
  } finally {
    worker.finish(1); // stops its heartbeat timer when it did not stop by itself
  }
}

function assertOneReplyEach(replies) {
  assert.deepEqual(
    replies.map((r) => Number(r.id)).sort((a, b) => a - b),
    Array.from({ length: N }, (_, k) => k + 1),
    'one reply per task',
  );
  for (const r of replies) {
    assert.equal(r.type, 'result', JSON.stringify(r));
    assert.deepEqual(payloadOf(r), payload(Number(r.id)));
  }
}

const isReply = (m) => m.type === 'result' || m.type === 'error';
const hello = (extra = {}) => frame({ type: 'hello', version: 1, worker_id: 'w', heartbeat_ms: 60000, max_frame: 16777216, ...extra });
const shutdown = frame({ type: 'shutdown', graceful: true });

test('frame reader: every message, in order, whatever the cuts', () => {
  const frames = taskFrames();
  const data = Buffer.concat(frames);
  const chunks = cut(data, awkwardCuts(frames, 0));
  assert.deepEqual(chunks.slice(0, 3).map((c) => c.length), [1, 1, 1], 'the first frames come one byte per read');
  assert.ok(Math.max(...chunks.map((c) => c.length)) >= 1000 * Math.min(...frames.map((f) => f.length)), 'one read holds 1 000 frames');
  const reader = new FrameReader();
  const ids = chunks.flatMap((c) => reader.push(c)).map((m) => Number(m.id));
  assert.deepEqual(ids, Array.from({ length: N }, (_, k) => k + 1));
  assert.equal(reader.pending, 0);
});

test('frame reader: pending counts the bytes of an unfinished frame, its length prefix included', () => {
  const whole = taskFrame(1, 'echo');
  for (const n of [1, 3, 4, 5, whole.length - 1]) {
    const reader = new FrameReader();
    assert.deepEqual(reader.push(whole.subarray(0, n)), []);
    assert.equal(reader.pending, n, `${n} bytes of a frame`);
  }
  const reader = new FrameReader();
  reader.push(whole.subarray(0, 4));
  reader.push(whole.subarray(4, 6));
  assert.equal(reader.pending, 6, 'a prefix, then two bytes of the body');
  reader.push(whole.subarray(6));
  assert.equal(reader.pending, 0, 'the frame is complete');
});

for (const concurrency of [undefined, 1, 4]) {
  const extra = concurrency === undefined ? {} : { concurrency };
  test(`in process, concurrency ${concurrency ?? 'unset'}: ${N} tasks and a shutdown in one read, each answered once`, async () => {
    const { code, messages } = await serveScripted(testWorker(), [Buffer.concat([hello(extra), ...taskFrames(), shutdown])]);
    assert.equal(code, 0);
    assert.equal(messages[0].type, 'ready');
    assertOneReplyEach(messages.filter(isReply));
  });

  test(`in process, concurrency ${concurrency ?? 'unset'}: frames cut one byte per read and inside prefixes, each answered once`, async () => {
    const frames = [hello(extra), ...taskFrames(), shutdown];
    const { code, messages } = await serveScripted(testWorker(), cut(Buffer.concat(frames), awkwardCuts(frames, 1)));
    assert.equal(code, 0);
    assertOneReplyEach(messages.filter(isReply));
  });
}

test('in process: the replies of tasks that finished together leave in one write', async () => {
  const tasks = Array.from({ length: 1000 }, (_, k) => taskFrame(k + 1, 'echo'));
  const { writes } = await serveScripted(testWorker(), [Buffer.concat([hello(), ...tasks, shutdown])]);
  const perWrite = writes.map((w) => splitFrames(w).map((m) => m.type));
  assert.deepEqual(perWrite[0], ['ready']);
  assert.equal(perWrite.length, 2, `${perWrite.length - 1} writes for 1 000 replies`);
  assert.equal(perWrite[1].length, 1000);
});

/** The ids each write after `ready` carried, serving `tasks` (`[id, type]`) at concurrency 1 in one read. */
async function idsPerWrite(worker, tasks) {
  const frames = tasks.map(([id, type]) => taskFrame(id, type));
  const { code, writes } = await serveScripted(worker, [Buffer.concat([hello({ concurrency: 1 }), ...frames, shutdown])]);
  assert.equal(code, 0);
  const perWrite = writes.map(splitFrames);
  return { ready: perWrite[0][0], ids: perWrite.slice(1).map((w) => w.map((m) => Number(m.id))) };
}

test('in process, concurrency 1, batched replies: the replies of one read leave in one write, and ready says so', async () => {
  const worker = new Worker({ holdReplies: 60_000 }).handle('echo', async (value) => value);
  const { ready, ids } = await idsPerWrite(worker, [[1, 'echo'], [2, 'echo'], [3, 'echo']]);
  assert.equal(ready.type, 'ready');
  assert.equal(ready.batches_replies, true);
  assert.deepEqual(ids, [[1, 2, 3]]);
});

test('in process, concurrency 1: replies held past holdReplies leave before the next task starts', async () => {
  const worker = new Worker({ holdReplies: 5 })
    .handle('echo', async (value) => value)
    .handle('block', async (value) => {
      // Holds the event loop past the hold, as CPU work outside a thread does.
      const until = performance.now() + 20;
      while (performance.now() < until);
      return value;
    });
  const { ids } = await idsPerWrite(worker, [[1, 'echo'], [2, 'block'], [3, 'echo']]);
  assert.deepEqual(ids, [[1, 2], [3]]);
});

test('holdReplies below 0 is refused', () => {
  assert.throws(() => new Worker({ holdReplies: -1 }), RangeError);
});

for (const concurrency of [1, 2, 4]) test(`in process, concurrency ${concurrency}, holdReplies 0: each reply is written before the next task starts`, async () => {
  const worker = new Worker({ holdReplies: 0 });
  const link = scriptedLink();
  const writtenAtStart = new Map();
  const written = () => link.writes.flatMap(splitFrames).filter(isReply).map((m) => Number(m.id));
  worker.handle('echo', async (value, ctx) => {
    writtenAtStart.set(ctx.id, written());
    return value;
  });
  const done = worker.serve(link);
  const tasks = Array.from({ length: 50 }, (_, k) => taskFrame(k + 1, 'echo'));
  link.input.emit('data', Buffer.concat([hello({ concurrency }), ...tasks, shutdown]));
  try {
    assert.equal(await bounded(done, 'the worker did not stop'), 0);
  } finally {
    worker.finish(1); // stops its heartbeat timer when it did not stop by itself
  }
  assert.equal(splitFrames(link.writes[0])[0].batches_replies, false, 'ready says nothing is batched');
  assert.deepEqual(written(), Array.from({ length: 50 }, (_, k) => k + 1));
  for (let id = 1; id <= 50; id++) {
    assert.deepEqual(writtenAtStart.get(id), Array.from({ length: id - 1 }, (_, k) => k + 1), `task ${id} started after every earlier reply was written`);
  }
});

async function startedProcess(t, helloExtra = {}) {
  const m = await Manager.start();
  t.after(() => m.cleanup());
  await m.hello({ heartbeat_ms: 60000, ...helloExtra });
  return m;
}

test(`a worker process fed ${N} tasks in one write answers each once`, async (t) => {
  const m = await startedProcess(t);
  m.output.write(Buffer.concat(Array.from({ length: N }, (_, k) => taskFrame(k + 1, 'echo'))));
  assertOneReplyEach(await m.replies(N));
});

test('a worker process fed tasks and a shutdown in one write answers every task, then exits 0', async (t) => {
  const m = await startedProcess(t, { concurrency: 2 });
  // Every third task sleeps on a timer, so tasks queue up behind it.
  const tasks = Array.from({ length: N }, (_, k) => (k + 1) % 3 === 0 ? taskFrame(k + 1, 'sleep', { ms: 0 }) : taskFrame(k + 1, 'echo'));
  m.output.write(Buffer.concat([...tasks, shutdown]));
  assert.deepEqual(await m.exit(), { code: 0, signal: null });
  const replies = await m.replies(N);
  assert.deepEqual(replies.map((r) => Number(r.id)).sort((a, b) => a - b), Array.from({ length: N }, (_, k) => k + 1));
  for (const r of replies) {
    const id = Number(r.id);
    assert.deepEqual([r.type, payloadOf(r)], ['result', id % 3 === 0 ? { slept_ms: 0 } : payload(id)]);
  }
});

for (const concurrency of [undefined, 1]) {
  test(`a cancel in the same write as its task gets one reply (concurrency ${concurrency ?? 'unset'})`, async (t) => {
    const m = await startedProcess(t, concurrency === undefined ? {} : { concurrency });
    const cancel = (id) => frame({ type: 'cancel', id });
    // 1 runs and is cancelled; 2 waits behind it with concurrency 1 (else it has
    // already returned when its cancel is read, and its result stands).
    m.output.write(Buffer.concat([taskFrame(1, 'sleep', { ms: 60000 }), taskFrame(2, 'echo', 'two'), cancel(2), cancel(1)]));
    const [one, two] = [await m.reply(1), await m.reply(2)];
    assert.deepEqual([one.type, one.kind], ['error', 'cancelled']);
    if (concurrency === 1) {
      assert.deepEqual([two.type, two.kind], ['error', 'cancelled']);
      assert.match(two.message, /before it started/);
    } else {
      assert.deepEqual([two.type, payloadOf(two)], ['result', 'two']);
    }
    m.task(3, 'echo', 'after');
    await m.reply(3);
    assert.equal(m.replyCount, 3, 'no second reply for a cancelled task');
  });
}

test('a worker process fed a shutdown and then a task in one write, nothing running: the task is answered `shutting_down`, then exit 0', async (t) => {
  const m = await startedProcess(t);
  m.output.write(Buffer.concat([shutdown, taskFrame(1, 'echo')]));
  assert.deepEqual(await m.exit(), { code: 0, signal: null });
  const [reply] = await m.replies(1);
  assert.deepEqual([reply.id, reply.type, reply.kind, reply.retryable], [1, 'error', 'shutting_down', true]);
  assert.equal(m.replyCount, 1);
});

test('a worker process whose input ends inside a frame exits 2, saying so on stderr, after a graceful shutdown too', async (t) => {
  const task = taskFrame(1, 'echo');
  const cases = [
    ['half a length prefix', [], task.subarray(0, 2), 2],
    ['a whole length prefix', [], task.subarray(0, 4), 4],
    ['a prefix and part of the body', [], task.subarray(0, 10), 10],
    ['3 bytes after a graceful shutdown, a task running', [taskFrame(2, 'sleep', { ms: 60000 }), shutdown], task.subarray(0, 3), 3],
  ];
  for (const [what, before, partial, pending] of cases) {
    const m = await startedProcess(t);
    m.output.write(Buffer.concat([...before, partial]));
    m.closeInput();
    assert.deepEqual(await m.exit(), { code: 2, signal: null }, what);
    assert.ok(m.stderr.includes(`the input ended inside a frame (${pending} bytes of it pending)`), `${what}: ${m.stderr}`);
    assert.equal(m.replyCount, 0, `${what}: no reply`);
  }
});
