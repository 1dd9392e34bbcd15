'use strict';
// The two byte streams to the manager, found through the CORTEX_* environment
// (PROTOCOL.md, Transports and environment), and the protection of stdout.
//
// Nothing here blocks a thread of libuv's pool: stdin and the FIFOs are read through
// libuv pipe handles (net.Socket), never with fs.read, so process.exit() always returns.

const fs = require('node:fs');
const net = require('node:net');
const { DEFAULT_MAX_FRAME } = require('./framing.cjs');
const { ProtocolError } = require('./errors.cjs');

/** How long a worker waits for the manager to open its ends of the FIFOs. */
const FIFO_OPEN_TIMEOUT_MS = 60_000;

// Our parent when the SDK is loaded (PROTOCOL.md, Transports and environment). It
// need not be the manager (CORTEX_MANAGER_PID): a worker may be started through a
// wrapper (`npm run`, `npx`, a shell script without `exec`), which stays its parent
// for as long as the manager lives.
const PARENT_AT_START = process.ppid;
const MANAGER_PID = Number.parseInt(process.env.CORTEX_MANAGER_PID ?? '', 10);

/** Whether our parent changed since the SDK loaded (we were re-parented, to init or a subreaper). */
function parentChanged() {
  return process.ppid !== PARENT_AT_START;
}

/**
 * Whether the manager process is gone: our parent changed (we were re-parented, to
 * init or a subreaper), or CORTEX_MANAGER_PID names no process (a worker orphaned
 * before the SDK loaded had its new parent from the start).
 */
function managerGone() {
  if (parentChanged()) return true;
  if (!(MANAGER_PID > 0)) return false;
  try {
    process.kill(MANAGER_PID, 0);
    return false;
  } catch (err) {
    // EPERM: alive, another user's.
    return err.code === 'ESRCH';
  }
}

/**
 * Points `process.stdout.write` (and so `console.log`, `console.info`, ...) at standard
 * error, and returns the original stdout writer. Idempotent.
 */
function protectStdout() {
  const stdout = process.stdout;
  if (stdout.__cortexProtected) return stdout.__cortexProtected;
  const original = stdout.write.bind(stdout);
  stdout.write = (chunk, encoding, callback) => process.stderr.write(chunk, encoding, callback);
  stdout.__cortexProtected = original;
  return original;
}

// In a worker the manager started itself (PROTOCOL.md, Nothing else on the
// protocol's descriptors), stdout is protected as soon as the SDK is loaded:
// before the worker's own code that follows the import (a banner, a model
// loading) can print onto the protocol's stream ahead of `ready`. Import the SDK
// before anything that prints. Only the manager's own child: a process the
// worker starts inherits the CORTEX_* environment, and its stdout is its
// parent's to read (a worker started through a wrapper is protected by `run()`).
if (process.env.CORTEX_TRANSPORT && PARENT_AT_START === MANAGER_PID) protectStdout();

/** The max_frame from `CORTEX_MAX_FRAME`, or the default. */
function maxFrameFrom(env) {
  const raw = env.CORTEX_MAX_FRAME;
  if (raw === undefined || raw === '') return DEFAULT_MAX_FRAME;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new ProtocolError(`CORTEX_MAX_FRAME must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/**
 * Opens the link the environment describes. Resolves to
 * `{ transport, maxFrame, input, write(frame), pending(), flush(), opened(), onBroken(f) }`: `input`
 * is a Readable of bytes from the manager, `write` sends whole frames (written at
 * once unless the pipe is full), `pending` is the number of bytes written but still
 * in the process, `flush` resolves when every frame written so far has left the
 * process, `opened` is called once the first frame has arrived, and `onBroken` names
 * what to call when a write fails (the manager is gone: after the input ended too).
 */
async function openLink(env = process.env) {
  const maxFrame = maxFrameFrom(env);
  const transport = env.CORTEX_TRANSPORT || 'stdio';
  if (transport === 'stdio') {
    const writeStdout = protectStdout();
    let broken = () => {};
    // A manager that died makes writes fail (EPIPE): treat it as the end of input.
    process.stdout.on('error', () => {
      process.stdin.destroy();
      broken();
    });
    let last = Promise.resolve();
    return {
      transport,
      maxFrame,
      input: process.stdin,
      write(frame) {
        last = new Promise((resolve) => writeStdout(frame, () => resolve()));
      },
      pending: () => process.stdout.writableLength,
      flush: () => last,
      opened() {},
      onBroken(f) {
        broken = f;
      },
    };
  }
  if (transport === 'fifo') {
    protectStdout();
    return openFifos(env, maxFrame);
  }
  throw new ProtocolError(`unsupported CORTEX_TRANSPORT ${JSON.stringify(transport)} (expected stdio or fifo)`);
}

async function openFifos(env, maxFrame) {
  const toWorker = env.CORTEX_FIFO_TO_WORKER;
  const fromWorker = env.CORTEX_FIFO_FROM_WORKER;
  for (const [name, value] of [['CORTEX_FIFO_TO_WORKER', toWorker], ['CORTEX_FIFO_FROM_WORKER', fromWorker]]) {
    if (!value) throw new ProtocolError(`the fifo transport needs ${name} to be set`);
  }
  const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
  // The read end first (PROTOCOL.md). A non-blocking open succeeds at once; a blocking
  // one would hold a libuv pool thread, and then process.exit() would wait for it.
  const readFd = fs.openSync(toWorker, O_RDONLY | O_NONBLOCK);
  // Until the manager opens its write end, a FIFO with no writer reads as EOF. Our own
  // keep-alive writer prevents that; it is closed when the first frame arrives.
  let keepAlive = fs.openSync(toWorker, O_WRONLY | O_NONBLOCK);
  const writeFd = await openWriter(fromWorker, O_WRONLY | O_NONBLOCK);
  const input = new net.Socket({ fd: readFd, readable: true, writable: false });
  const output = new net.Socket({ fd: writeFd, readable: false, writable: true });
  // The manager's death shows as EOF on input; a write error means the same.
  let broken = () => {};
  output.on('error', () => {
    input.destroy();
    broken();
  });
  const watch = setInterval(() => {
    if (managerGone()) input.destroy(new ProtocolError('the manager went away before sending hello'));
  }, 100);
  let last = Promise.resolve();
  return {
    transport: 'fifo',
    maxFrame,
    input,
    write(frame) {
      last = new Promise((resolve) => output.write(frame, () => resolve()));
    },
    pending: () => output.writableLength,
    flush: () => last,
    opened() {
      clearInterval(watch);
      if (keepAlive !== null) {
        fs.closeSync(keepAlive);
        keepAlive = null;
      }
    },
    onBroken(f) {
      broken = f;
    },
  };
}

/** Opens the from-worker FIFO for writing, retrying while the manager has no reader. */
async function openWriter(path, flags) {
  const deadline = Date.now() + FIFO_OPEN_TIMEOUT_MS;
  for (let pause = 1; ; pause = Math.min(pause * 2, 25)) {
    try {
      return fs.openSync(path, flags);
    } catch (e) {
      if (e.code !== 'ENXIO') throw e;
    }
    if (managerGone()) throw new ProtocolError('the manager went away before opening its FIFOs');
    if (Date.now() >= deadline) throw new ProtocolError('the manager did not open its FIFOs in time');
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

module.exports = { openLink, protectStdout, maxFrameFrom, parentChanged };
