'use strict';
// Handlers that run in a worker_threads thread of their own, so a handler that blocks
// (a long computation) does not stop the main thread's heartbeats.

const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { Worker: Thread } = require('node:worker_threads');
const { TaskError } = require('./errors.cjs');

const ENTRY = path.join(__dirname, 'thread-entry.cjs');

/** A module reference as a URL string that `import()` in another thread understands. */
function moduleUrl(module) {
  if (module instanceof URL) return module.href;
  if (/^[a-z][a-z0-9+.-]*:/i.test(module)) return module;
  return pathToFileURL(path.resolve(module)).href;
}

/**
 * Runs `exportName` of `module` with `(payload, ctx)` in a new thread and resolves to
 * its result; the thread is ended once it answered. A cancel terminates the thread
 * and rejects with the signal's reason.
 */
function runInThread(module, exportName, payload, ctx) {
  return new Promise((resolve, reject) => {
    const thread = new Thread(ENTRY, {
      workerData: {
        module: moduleUrl(module),
        exportName,
        payload,
        task: { id: ctx.id, taskType: ctx.taskType, attempt: ctx.attempt, deadline: ctx.deadline },
      },
      stdout: true, // the thread's console.log reaches us here, and goes to stderr
    });
    thread.stdout.pipe(process.stderr, { end: false });
    let settled = false;
    const settle = (fn, value) => {
      if (settled) return;
      settled = true;
      ctx.signal.removeEventListener('abort', onAbort);
      fn(value);
    };
    const onAbort = () => {
      settle(reject, ctx.signal.reason);
      thread.terminate();
    };
    ctx.signal.addEventListener('abort', onAbort);
    thread.on('message', (message) => {
      if (message.ok) settle(resolve, message.value);
      else settle(reject, new TaskError(message.message, { kind: message.kind, retryable: message.retryable }));
      // Its answer is all a thread is for: one whose module keeps its event
      // loop open (a timer, a connection) would otherwise live on, one more
      // for every task.
      thread.terminate();
    });
    thread.on('error', (e) => settle(reject, e));
    thread.on('exit', (code) => settle(reject, new Error(`the handler's thread exited (code ${code}) without a result`)));
  });
}

module.exports = { runInThread };
