// A fake manager for the SDK's tests: spawns a worker script with the CORTEX_*
// environment, speaks the protocol to it over stdio or FIFOs, and records every frame.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encode, decode } from '@msgpack/msgpack';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The SDK's example worker. */
export const EXAMPLE = path.join(HERE, '..', 'examples', 'example-worker.mjs');
/** The bound of every wait in the tests. */
export const WAIT_MS = 15_000;

/**
 * Encodes one frame (prefix + body), its integers as MessagePack integers, as the
 * manager writes them. `floats` names keys to send as floats instead, as no manager
 * does: `{ attempt: 32 }` writes `attempt` as a float 32, `64` as a float 64.
 */
export function frame(message, floats = {}) {
  const entries = Object.entries(message);
  if (entries.length > 15) throw new RangeError('frame() writes a fixmap: 15 keys at most');
  const body = Buffer.concat([
    Uint8Array.of(0x80 + entries.length),
    ...entries.flatMap(([key, value]) => [encode(key), encodeValue(value, floats[key])]),
  ]);
  const out = Buffer.alloc(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

/**
 * `value` as a float of `bits` bits, or else as MessagePack: with useBigInt64,
 * @msgpack/msgpack writes a number of 2^32 or more as a float 64, so such an integer
 * goes as a bigint (a uint64 or int64).
 */
function encodeValue(value, bits) {
  if (bits !== undefined) return encode(value, { forceIntegerToFloat: true, forceFloat32: bits === 32 });
  const wide = Number.isSafeInteger(value) && (value >= 2 ** 32 || value < -(2 ** 31));
  return encode(wide ? BigInt(value) : value, { useBigInt64: true });
}

/** A running worker and the manager side of its link. */
export class Manager {
  /**
   * @param {string} script the worker script
   * @param {{transport?: 'stdio'|'fifo', env?: object, wrapped?: boolean}} [options]
   *   `wrapped`: started through a shell that does not `exec` it, which is then the
   *   worker's parent and `child` (as with `npm run` or a wrapper script).
   */
  static async start(script = EXAMPLE, options = {}) {
    const transport = options.transport ?? 'stdio';
    // As the manager does: its own pid (the worker's parent, unless wrapped).
    const env = {
      ...process.env,
      CORTEX_TRANSPORT: transport,
      CORTEX_WORKER_ID: 'worker-1',
      CORTEX_MANAGER_PID: String(process.pid),
      ...options.env,
    };
    const m = new Manager();
    const [command, args] = options.wrapped
      ? ['sh', ['-c', '"$0" "$1"; exit $?', process.execPath, script]]
      : [process.execPath, [script]];
    if (transport === 'fifo') {
      m.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cortex-node-test-'));
      const to = path.join(m.dir, 'to.fifo');
      const from = path.join(m.dir, 'from.fifo');
      execFileSync('mkfifo', ['-m', '600', to, from]);
      env.CORTEX_FIFO_TO_WORKER = to;
      env.CORTEX_FIFO_FROM_WORKER = from;
      // As the real manager does: our read end (non-blocking opens succeed at once).
      const readFd = fs.openSync(from, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      m.keepAlive = fs.openSync(from, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      m.child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      m.input = new net.Socket({ fd: readFd, readable: true, writable: false });
      const writeFd = await openWhenReader(to, m.child);
      m.output = new net.Socket({ fd: writeFd, readable: false, writable: true });
      m.stdout = m.child.stdout;
    } else {
      m.child = spawn(command, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
      m.input = m.child.stdout;
      m.output = m.child.stdin;
      m.output.on('error', () => {});
      m.stdout = null;
    }
    m.frames = [];
    m.replyCount = 0;
    m.waiters = [];
    m.stderr = '';
    m.stdoutText = '';
    m.child.stderr.on('data', (d) => {
      m.stderr += d;
    });
    if (m.stdout) m.stdout.on('data', (d) => (m.stdoutText += d));
    m.exited = new Promise((resolve) => m.child.on('exit', (code, signal) => resolve({ code, signal })));
    let pending = Buffer.alloc(0);
    m.input.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
        const n = pending.readUInt32BE(0);
        const message = decode(pending.subarray(4, 4 + n), { useBigInt64: true });
        message.at = Date.now();
        // The body as sent, for checks the lenient decoder cannot make (UTF-8 validity).
        Object.defineProperty(message, 'body', { value: Buffer.from(pending.subarray(4, 4 + n)) });
        pending = pending.subarray(4 + n);
        m.frames.push(message);
        if (message.type === 'result' || message.type === 'error') m.replyCount += 1;
        m.poke();
      }
    });
    m.input.on('error', () => {});
    m.trailing = () => pending.length;
    return m;
  }

  poke() {
    for (const w of [...this.waiters]) w();
  }

  /** Sends `message` (`floats`: as for frame()). */
  send(message, floats = {}) {
    this.output.write(frame(message, floats));
  }

  /** Sends hello (defaults overridable) and waits for ready. */
  async hello(extra = {}) {
    this.send({ type: 'hello', version: 1, worker_id: 'worker-1', heartbeat_ms: 1000, max_frame: 16777216, ...extra });
    return this.next((f) => f.type === 'ready');
  }

  /** Waits for the first recorded frame (from index `from`) matching `pred`. */
  next(pred, from = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.frames.slice(from).find(pred);
        if (found) {
          done();
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no matching frame within ${WAIT_MS} ms; ${this.frames.length} frames, the last: ${JSON.stringify(this.frames.slice(-10).map((f) => f.type))}; stderr: ${this.stderr}`));
      }, WAIT_MS);
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }

  /** The reply (result or error) for task `id`. */
  reply(id) {
    return this.next((f) => (f.type === 'result' || f.type === 'error') && Number(f.id) === id);
  }

  /** Waits until `n` replies (result or error) have been recorded; returns every reply. */
  async replies(n) {
    await this.next(() => this.replyCount >= n);
    return this.frames.filter((f) => f.type === 'result' || f.type === 'error');
  }

  /** Sends a task with a MessagePack payload. */
  task(id, taskType, payload, extra = {}) {
    const bytes = payload === undefined ? new Uint8Array(0) : encode(payload);
    this.send({ type: 'task', id, task_type: taskType, payload: bytes, attempt: 1, timeout_ms: 30000, ...extra });
  }

  /** Waits (bounded) for the worker process to exit. */
  async exit() {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the worker did not exit within ${WAIT_MS} ms; stderr: ${this.stderr}`)), WAIT_MS);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the manager's write end (end of input for the worker). */
  closeInput() {
    if (this.keepAlive !== undefined) {
      fs.closeSync(this.keepAlive);
      this.keepAlive = undefined;
    }
    this.output.end();
  }

  /** Kills the worker if it still runs, removes the FIFOs. Safe to call twice. */
  cleanup() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    if (this.keepAlive !== undefined) {
      fs.closeSync(this.keepAlive);
      this.keepAlive = undefined;
    }
    this.input.destroy();
    this.output.destroy();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Decodes a result frame's payload. */
export function payloadOf(reply) {
  return reply.payload.length ? decode(reply.payload) : null;
}

async function openWhenReader(fifo, child) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      return fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      if (e.code !== 'ENXIO') throw e;
    }
    if (child.exitCode !== null) throw new Error(`the worker exited (${child.exitCode}) before opening its FIFO`);
    if (Date.now() > deadline) throw new Error('the worker did not open its FIFO in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
