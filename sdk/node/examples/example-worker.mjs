// An example cortex-pool worker: echo, fail, crash, sleep, noisy, block and spin
// handlers. Run by the pool (cortex-pool/tests/node_worker.rs, the benchmarks) or by
// the SDK's own tests, with the CORTEX_* environment set.
import { setTimeout as sleep } from 'node:timers/promises';
import { FatalError, Worker } from 'cortex-pool-worker';

const worker = new Worker();

// Returns its payload unchanged.
worker.handle('echo', async (payload) => payload);

// {times, fatal}: fails while attempt <= times, then succeeds.
worker.handle('fail', async ({ times = 1, fatal = false } = {}, ctx) => {
  if (ctx.attempt <= times) {
    if (fatal) throw new FatalError(`fatal failure on attempt ${ctx.attempt}`);
    throw new Error(`failing attempt ${ctx.attempt} of ${times}`);
  }
  return { attempt: ctx.attempt };
});

// {code}: the whole process exits with that status, mid-task.
worker.handle('crash', async ({ code = 1 } = {}) => process.exit(code));

// {ms}: waits, stopping early when cancelled (the rejection becomes `cancelled`).
worker.handle('sleep', async ({ ms = 0 } = {}, ctx) => {
  await sleep(ms, undefined, { signal: ctx.signal });
  return { slept_ms: ms };
});

// Writes to stdout two ways (both land on stderr), then echoes.
worker.handle('noisy', async (payload) => {
  console.log('noisy handler: console.log');
  process.stdout.write('noisy handler: process.stdout.write\n');
  return payload;
});

// {ms}: blocks the event loop (busy loop): no heartbeat, no other task meanwhile.
worker.handle('block', async ({ ms = 0 } = {}) => {
  const end = Date.now() + ms;
  while (Date.now() < end);
  return { blocked_ms: ms };
});

// The same busy loop in a thread of its own (./spin.mjs): heartbeats keep flowing.
worker.handleInThread('spin', new URL('./spin.mjs', import.meta.url));

worker.run();
