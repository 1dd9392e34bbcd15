// One burst through the Node SDK's example worker, no pool in between:
//
//   node sdk/node/bench/burst.mjs [TASKS] [CONCURRENCY]
//
// Sends hello (with `concurrency` when given), TASKS echo tasks of 64 B in one write
// and a graceful shutdown, reads every reply, and prints
// `RESULT {"tasks":…,"replies":…,"reads":…,"secs":…,"tasks_per_s":…}` (`reads`: how
// many chunks the replies came in). Run it under `strace -f -c -e trace=write,writev`
// to count the worker's writes.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encode, decode } from '@msgpack/msgpack';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const tasks = Number(process.argv[2] ?? 100000);
const concurrency = process.argv[3] === undefined ? undefined : Number(process.argv[3]);

function frame(message) {
  const body = encode(message);
  const out = Buffer.alloc(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

const payload = encode({ msg: 'x'.repeat(57) }); // 64 bytes of MessagePack
const frames = [frame({ type: 'hello', version: 1, worker_id: 'bench', heartbeat_ms: 60000, max_frame: 16777216, ...(concurrency ? { concurrency } : {}) })];
for (let id = 1; id <= tasks; id++) frames.push(frame({ type: 'task', id, task_type: 'echo', payload, attempt: 1, timeout_ms: 0 }));
frames.push(frame({ type: 'shutdown', graceful: true }));

const child = spawn(process.execPath, [path.join(HERE, '..', 'examples', 'example-worker.mjs')], {
  env: { ...process.env, CORTEX_TRANSPORT: 'stdio', CORTEX_WORKER_ID: 'bench' },
  stdio: ['pipe', 'pipe', 'inherit'],
});
let pending = Buffer.alloc(0);
let replies = 0;
let reads = 0;
let started;
child.stdout.on('data', (chunk) => {
  reads += 1;
  pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
  let at = 0;
  while (pending.length - at >= 4 && pending.length - at >= 4 + pending.readUInt32BE(at)) {
    const n = pending.readUInt32BE(at);
    const type = decode(pending.subarray(at + 4, at + 4 + n)).type;
    if (type === 'ready') started = process.hrtime.bigint();
    if (type === 'result' || type === 'error') replies += 1;
    at += 4 + n;
  }
  pending = pending.subarray(at);
});
child.stdin.write(frames[0]);
child.stdin.write(Buffer.concat(frames.slice(1)));
child.on('exit', (code) => {
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`RESULT ${JSON.stringify({ tasks, replies, reads, code, secs: +secs.toFixed(3), tasks_per_s: Math.round(tasks / secs) })}`);
  process.exitCode = replies === tasks && code === 0 ? 0 : 1;
});
