'use strict';
// The body of a handleInThread() thread: import the module, run the export once,
// post the outcome back.

const { parentPort, workerData } = require('node:worker_threads');
const { TaskError } = require('./errors.cjs');

async function main() {
  const { module, exportName, payload, task } = workerData;
  const loaded = await import(module);
  const fn = exportName === 'default' ? (loaded.default?.default ?? loaded.default) : loaded[exportName];
  if (typeof fn !== 'function') {
    throw new TypeError(`${module} has no function export ${JSON.stringify(exportName)}`);
  }
  const ctx = { ...task, signal: new AbortController().signal, remainingMs: () => remaining(task.deadline) };
  return fn(payload, ctx);
}

function remaining(deadline) {
  return deadline === null ? Infinity : Math.max(0, deadline - Date.now());
}

/**
 * Posts the handler's result back. One that cannot be cloned (a function, say) fails the
 * task as on the main thread a result MessagePack cannot encode does: `handler`, not
 * retryable (no retry changes what the handler returns), naming what failed.
 */
function postResult(value) {
  try {
    parentPort.postMessage({ ok: true, value });
  } catch (e) {
    const message = `the result cannot be passed back from the handler's thread: ${e.message}`;
    parentPort.postMessage({ ok: false, message, kind: 'handler', retryable: false });
  }
}

main().then(
  postResult,
  (e) => {
    const message = e instanceof Error ? e.message || e.name : String(e);
    const fatal = e instanceof TaskError ? !e.retryable : e !== null && typeof e === 'object' && e.retryable === false;
    const kind = e instanceof TaskError ? e.kind : 'handler';
    parentPort.postMessage({ ok: false, message, kind, retryable: !fatal });
  },
);
