'use strict';
// The Worker: handlers by task type, the handshake, the task queue honouring
// `hello.concurrency`, cancellation, heartbeats, shutdown (PROTOCOL.md, Worker checklist).

const { encodeFrame, FrameReader, wireInt } = require('./framing.cjs');
const { openLink, parentChanged } = require('./link.cjs');
const { TaskError, CancelledError, ProtocolError } = require('./errors.cjs');
const { runInThread } = require('./threads.cjs');
const { decodePayload, encodeResult, wellFormed, head } = require('./values.cjs');

/** The protocol version this SDK speaks. */
const PROTOCOL_VERSION = 1;
const LEVELS = ['error', 'warn', 'info', 'debug'];
// The longest delay setInterval takes: Node runs a longer one every 1 ms instead.
const MAX_TIMER_MS = 2 ** 31 - 1;
// How often a worker told to send no heartbeats still checks that the manager lives.
const WATCH_MS = 1000;
const MAX_UINT32 = 2 ** 32 - 1;
/**
 * With batched replies, a task type counts as blocking once a task of it held the
 * thread for longer than `holdReplies` as it started, until this many of its tasks
 * in a row did not (see startWaiting). The same number as the Rust SDK's.
 */
const QUICK_RUNS_TO_FORGIVE = 100;

/** What a handler knows about the task attempt it runs. */
class Context {
  constructor(worker, task) {
    this.worker = worker;
    /** The task's id (a number; a bigint only above 2^53). */
    this.id = task.id;
    /** The task type, the name the handler was registered under. */
    this.taskType = task.taskType;
    /** 1 for the first attempt, 2 for the first retry, ... */
    this.attempt = task.attempt;
    /** When the manager gives up on this attempt, in Date.now() milliseconds, or null for no limit. */
    this.deadline = null;
    this.abort = null; // made when first asked for: most tasks never look
  }

  /** The AbortController behind `signal` (made on first use). */
  get controller() {
    if (this.abort === null) this.abort = new AbortController();
    return this.abort;
  }

  /** Fires when the manager cancels the task; its `reason` is a CancelledError. */
  get signal() {
    return this.controller.signal;
  }

  /** Milliseconds left before the deadline (Infinity without one, never negative). */
  remainingMs() {
    return this.deadline === null ? Infinity : Math.max(0, this.deadline - Date.now());
  }

  /** Sends a `log` frame tagged with the task id (level: error, warn, info or debug). */
  log(level, message) {
    this.worker.log(level, `task ${this.id}: ${message}`);
  }
}

/** The state of one task the worker has received and not yet answered. */
class Task {
  /** @param message a `task` message with every key (see malformed) */
  constructor(message) {
    this.id = wireInt(message.id);
    this.taskType = message.task_type;
    this.attempt = Number(message.attempt);
    this.timeoutMs = Number(message.timeout_ms);
    this.payload = message.payload;
    this.ctx = null; // set when the task starts running
  }
}

/** A set of handlers and the loop that serves them over the link. */
class Worker {
  /**
   * @param {{concurrency?: number, holdReplies?: number, handlers?: Record<string, Function>}} [options]
   *   `concurrency`: the most handlers this worker runs at once (the manager's
   *   `hello.concurrency` lowers it further); `holdReplies`: how long, in
   *   milliseconds, finished tasks' replies may wait for later ones while those
   *   start, checked as each task starts (1 by default; 0 writes each before a
   *   later task starts); a task of a type that blocked the thread for longer
   *   as it started starts only once they are written (see startWaiting, and
   *   "Batched replies" in PROTOCOL.md); `handlers`: as for handleAll().
   */
  constructor(options = {}) {
    this.handlers = new Map();
    this.limit = options.concurrency ?? Infinity;
    if (!(this.limit >= 1)) throw new RangeError('concurrency must be at least 1');
    this.holdMs = options.holdReplies ?? 1;
    if (!(this.holdMs >= 0)) throw new RangeError('holdReplies must be at least 0');
    this.heldSince = 0; // when the oldest reply in the outbox was queued
    // Task types that count as blocking (see startWaiting): type -> how many of its
    // tasks in a row must start quickly before it counts as quick again.
    this.blocking = new Map();
    this.tasks = new Map(); // id -> Task, every task received and not answered
    this.waiting = []; // Tasks not started yet, in arrival order
    this.running = 0;
    this.flushing = false; // waiting for a reply to leave before the next task starts
    this.startPending = false; // a start asked for once this turn's callbacks ran (startLater)
    this.outbox = []; // frames of replies not written yet (written together, see queueReply)
    this.outboxQueued = false; // a writeOutbox() is scheduled
    this.turn = 0; // the event loop's turn, as far as task starts tell it (see currentTurn)
    this.turnEnds = false; // the setImmediate that ends the turn is scheduled
    this.tasksDone = 0;
    this.link = null;
    this.state = 'starting'; // starting -> serving -> draining -> stopped
    if (options.handlers) this.handleAll(options.handlers);
  }

  /** Registers `handler(payload, ctx)` for tasks of `type`; returns the worker. */
  handle(type, handler) {
    if (typeof type !== 'string' || type === '') throw new TypeError('a task type must be a non-empty string');
    // It goes into `ready`, where half a surrogate pair would be invalid UTF-8.
    if (wellFormed(type) !== type) throw new TypeError(`the task type ${JSON.stringify(type)} holds a lone surrogate`);
    if (typeof handler !== 'function') throw new TypeError(`the handler for ${JSON.stringify(type)} must be a function`);
    this.handlers.set(type, handler);
    return this;
  }

  /** Registers every `type: handler` of an object (the original's handler map); returns the worker. */
  handleAll(handlers) {
    for (const [type, handler] of Object.entries(handlers)) this.handle(type, handler);
    return this;
  }

  /**
   * Registers a handler that runs in its own `worker_threads` thread per task, so it
   * may block (CPU work) without stopping heartbeats. `module` is a path or URL of a
   * module whose export `exportName` is `(payload, ctx) => result`; a cancel
   * terminates the thread. Returns the worker.
   */
  handleInThread(type, module, exportName = 'default') {
    return this.handle(type, (payload, ctx) => runInThread(module, exportName, payload, ctx));
  }

  /**
   * Sends a `log` frame to the manager (to stderr before the handshake); throws a
   * `ProtocolError` when the frame would be over `max_frame`.
   */
  log(level, message) {
    if (!LEVELS.includes(level)) throw new RangeError(`log level must be one of ${LEVELS.join(', ')}`);
    if (this.state === 'starting' || this.state === 'stopped') {
      process.stderr.write(`[${level}] ${message}\n`);
      return;
    }
    this.send({ type: 'log', level, message: wellFormed(String(message)) });
  }

  /**
   * Serves tasks on the link from the environment until shutdown or end of input,
   * then exits the process: 0 after a shutdown or at end of input, 2 when the link
   * or the handshake fails (input that ends inside a frame too). Never resolves.
   */
  async run(options = {}) {
    let code;
    try {
      code = await this.serve(await openLink(options.env ?? process.env));
    } catch (e) {
      process.stderr.write(`cortex-pool-worker: ${e instanceof ProtocolError ? e.message : e.stack}\n`);
      code = 2;
    }
    this.state = 'stopped';
    if (this.link) await this.link.flush();
    process.exit(code);
  }

  serve(link) {
    this.link = link;
    const reader = new FrameReader(link.maxFrame);
    return new Promise((resolve) => {
      this.finish = (code) => {
        this.writeOutbox();
        this.state = 'stopped';
        // No waiting task starts any more, even when a running one settles
        // before run() has flushed the link and exited (see startWaiting).
        this.waiting = [];
        clearInterval(this.heartbeat);
        link.input.removeAllListeners('data');
        link.input.pause();
        resolve(code);
      };
      link.input.on('data', (chunk) => {
        let messages;
        try {
          messages = reader.push(chunk);
        } catch (e) {
          this.broken(e.message);
          return;
        }
        for (const message of messages) {
          if (this.state === 'stopped') return;
          this.dispatch(message, reader);
        }
        // After the whole read: a task behind a `shutdown` in it is answered first.
        this.drained();
      });
      let ended = false;
      link.input.on('end', () => {
        ended = true;
        this.inputEnded(reader);
      });
      // A write failed: the manager is gone, whether or not the input ended
      // (a graceful drain goes on after it): exit 0 (PROTOCOL.md).
      link.onBroken?.(() => this.finish(0));
      // Closed without an end: destroyed (the output broke, see openLink): exit 0.
      link.input.on('close', () => {
        if (!ended) this.finish(0);
      });
      link.input.on('error', (e) => {
        if (e instanceof ProtocolError) process.stderr.write(`cortex-pool-worker: ${e.message}\n`);
        this.finish(e instanceof ProtocolError ? 2 : 0);
      });
    });
  }

  dispatch(message, reader) {
    if (this.state === 'starting') {
      this.link.opened();
      this.handshake(message, reader);
      return;
    }
    const bad = malformed(message);
    if (bad !== null) {
      this.broken(bad);
      return;
    }
    switch (message.type) {
      case 'task':
        if (this.state === 'draining') this.refuse(new Task(message));
        else this.receive(new Task(message));
        break;
      case 'cancel':
        this.cancel(wireInt(message.id));
        break;
      case 'shutdown':
        if (message.graceful) {
          this.state = 'draining'; // stops once its tasks are answered (see drained)
        } else {
          this.finish(0);
        }
        break;
      default:
      // Another hello, or a message from a newer protocol: ignored.
    }
  }

  /**
   * End of input (PROTOCOL.md, Framing; Shutdown and end of input): inside a frame it
   * is a broken link (exit 2); during a graceful shutdown the drain goes on (the
   * manager reads on until the worker exits); otherwise exit 0 at once, without
   * waiting for tasks: nobody is left to read their replies.
   */
  inputEnded(reader) {
    if (this.state === 'stopped') return;
    if (reader.pending > 0) this.broken(`the input ended inside a frame (${reader.pending} bytes of it pending)`);
    else if (this.state === 'draining') this.drained();
    else this.finish(0);
  }

  /** Gives up on a broken link: writes `why` on stderr and stops with status 2. */
  broken(why) {
    process.stderr.write(`cortex-pool-worker: ${why}\n`);
    this.finish(2);
  }

  handshake(hello, reader) {
    if (hello.type !== 'hello') {
      this.broken(`expected hello first, got ${JSON.stringify(hello.type)}`);
      return;
    }
    const version = wireInt(hello.version);
    if (version !== PROTOCOL_VERSION) {
      this.broken(`the manager speaks protocol version ${String(version)}, this worker speaks ${PROTOCOL_VERSION}`);
      return;
    }
    const bad = malformed(hello);
    if (bad !== null) {
      this.broken(bad);
      return;
    }
    const concurrency = helloConcurrency(hello.concurrency);
    if (concurrency === null) {
      this.broken(`hello.concurrency must be an integer from 1 to ${MAX_UINT32}, got ${shown(hello.concurrency)}`);
      return;
    }
    const maxFrame = Number(wireInt(hello.max_frame ?? 0));
    if (maxFrame > 0) {
      this.link.maxFrame = maxFrame;
      reader.maxFrame = maxFrame;
    }
    this.limit = Math.min(this.limit, concurrency);
    this.state = 'serving';
    this.send({
      type: 'ready',
      version: PROTOCOL_VERSION,
      pid: process.pid,
      task_types: [...this.handlers.keys()].sort(),
      batches_replies: this.holdMs > 0,
    });
    this.startHeartbeat(heartbeatPeriod(hello.heartbeat_ms));
  }

  /**
   * Sends a heartbeat every `period` ms (PROTOCOL.md, Heartbeats); with `period` 0
   * none, but the timer still checks every WATCH_MS that the manager lives.
   */
  startHeartbeat(period) {
    this.heartbeat = setInterval(
      () => {
        // A manager that died without closing our input (it cannot, but be
        // sure). Only the parent is watched now: the manager's pid, which the
        // link checked until the handshake, may name no process we can see
        // (a sandbox's own pid namespace) while the manager lives.
        if (parentChanged()) this.finish(0);
        else if (period > 0) this.sendHeartbeat();
      },
      period > 0 ? period : WATCH_MS,
    );
  }

  sendHeartbeat() {
    const cpu = process.cpuUsage();
    this.send({
      type: 'heartbeat',
      rss_bytes: process.memoryUsage.rss(),
      cpu_ms: Math.floor((cpu.user + cpu.system) / 1000),
      tasks_done: this.tasksDone,
      in_flight: this.tasks.size,
    });
  }

  /**
   * Answers a task that arrived after a graceful `shutdown` with `shutting_down`
   * (retryable) at once, without running it (PROTOCOL.md, Shutdown and end of input).
   */
  refuse(task) {
    this.tasksDone += 1;
    this.queueReply(this.fitted(errorReply(task.id, 'shutting_down', 'the worker is shutting down', true)));
  }

  receive(task) {
    if (this.tasks.has(task.id)) return; // a duplicate id is a manager bug; the first one wins
    this.tasks.set(task.id, task);
    this.waiting.push(task);
    this.startWaiting();
  }

  /**
   * Starts what waits for a slot. `settled`: called once the callbacks of the
   * turn that asked ran (see below).
   */
  startWaiting(settled = false) {
    if (this.state === 'stopped' || this.running >= this.limit || this.waiting.length === 0) return;
    if (this.holdMs > 0) {
      // Batched replies (the worker said so in `ready`): the replies gathered so far
      // wait for the next tasks' unless they waited `holdMs` already; they leave
      // when this turn's callbacks are done (queueReply), before the worker waits.
      if (this.outbox.length > 0 && performance.now() - this.heldSince >= this.holdMs) this.writeOutbox();
      // Tasks of a quick type start now; one of a blocking type waits below.
      const running = this.running;
      this.startQuick();
      if (this.running >= this.limit || this.waiting.length === 0) return;
      // One started now may have finished, its reply still in a promise callback.
      if (this.running !== running) settled = false;
      // The next task is of a type that blocked the thread as it started: it
      // starts as without batched replies, once every reply before it is
      // written, so that it delays none of them. (A finished task's reply may
      // still be in a promise callback now: see below.)
    }
    // A finished task's reply must be on the wire before a later task starts, or a
    // task that kills the process would take it along (PROTOCOL.md, Tasks, replies
    // and concurrency). A task that finished in this turn is answered in a
    // promise callback still to run: while one runs, the next starts once they
    // ran (`setImmediate`), one at a time.
    if (this.running > 0 && !settled) {
      this.startLater();
      return;
    }
    // Write the replies gathered so far, and wait while the pipe was full and
    // they are still in the process.
    this.writeOutbox();
    if (this.link.pending() > 0) {
      if (!this.flushing) {
        this.flushing = true;
        this.link.flush().then(() => {
          this.flushing = false;
          // Not `settled`: a handler may have finished in this callback too.
          this.startWaiting();
        });
      }
      return;
    }
    this.startNext(1);
    this.startWaiting();
  }

  /**
   * With batched replies: starts waiting tasks, oldest first, while a slot is
   * free and the oldest is not of a blocking type (see startNext).
   */
  startQuick() {
    while (this.running < this.limit && this.waiting.length > 0) {
      // Checked before each start: the task started last may have just shown
      // its type blocking.
      if (this.blocking.size > 0 && this.blocking.has(this.waiting[0].taskType)) return;
      this.startNext(1);
    }
  }

  /** Calls `startWaiting` once this turn's callbacks ran (once, however often asked). */
  startLater() {
    if (this.startPending) return;
    this.startPending = true;
    setImmediate(() => {
      this.startPending = false;
      this.startWaiting(true);
    });
  }

  /** Starts waiting tasks, oldest first, while a slot is free: `most` of them at most. */
  startNext(most = Infinity) {
    for (let started = 0; started < most && this.running < this.limit && this.waiting.length > 0; started++) {
      const task = this.waiting.shift();
      this.running += 1;
      const turn = this.holdMs > 0 ? this.currentTurn() : 0;
      // `execute` answers every error it can name; whatever else goes wrong
      // still answers the task, and no rejection is left unhandled (one
      // would end the process, and every task in flight with it).
      let executed;
      if (this.holdMs > 0) {
        // How long the task holds the thread as it starts (until its handler
        // returned or first awaited): what replies held meanwhile wait for.
        const began = performance.now();
        executed = this.execute(task);
        this.timed(task.taskType, performance.now() - began);
      } else {
        executed = this.execute(task);
      }
      executed
        .catch((e) => errorReply(task.id, 'handler', `the task failed: ${describe(e)}`, false))
        .then((reply) => {
          this.running -= 1;
          this.answer(task, reply);
          // Only the replies of handlers that finished in the turn they started
          // in are held (as in the Rust SDK): one that went pending (it waited
          // for I/O or a timer) is written now, with those held before it, since
          // the task started next may block the thread for long.
          if (this.holdMs > 0 && turn !== this.turn) this.writeOutbox();
          this.startWaiting();
        });
    }
  }

  /**
   * Notes that a task of `type` held the thread for `ms` as it started. Longer
   * than `holdMs`, and the type counts as blocking: its next tasks start only
   * once the replies before them are written (startWaiting), until
   * QUICK_RUNS_TO_FORGIVE of them in a row started quickly (a pause that was not
   * the handler's, such as a garbage collection, costs a hundred tasks' batching,
   * not all of them).
   */
  timed(type, ms) {
    if (ms > this.holdMs) {
      this.blocking.set(type, QUICK_RUNS_TO_FORGIVE);
      return;
    }
    if (this.blocking.size === 0) return;
    const left = this.blocking.get(type);
    if (left === undefined) return;
    if (left <= 1) this.blocking.delete(type);
    else this.blocking.set(type, left - 1);
  }

  /**
   * The number of the event loop's turn now: it goes up once the callback a task
   * started in is done with its promise work (a microtask, then a tick: after
   * every promise callback chained meanwhile), so a task that finishes under
   * another number waited for the event loop (I/O, a timer): it went pending.
   */
  currentTurn() {
    if (!this.turnEnds) {
      this.turnEnds = true;
      queueMicrotask(() =>
        process.nextTick(() => {
          this.turn += 1;
          this.turnEnds = false;
        }),
      );
    }
    return this.turn;
  }

  cancel(id) {
    const task = this.tasks.get(id);
    if (task === undefined) return; // already answered or unknown: not an error
    if (task.ctx === null) {
      // Still waiting for a slot: it never runs.
      this.waiting.splice(this.waiting.indexOf(task), 1);
      this.answer(task, errorReply(task.id, 'cancelled', `task ${String(id)} cancelled before it started`, false));
      return;
    }
    if (!task.ctx.signal.aborted) task.ctx.controller.abort(new CancelledError(`task ${String(id)} cancelled`));
  }

  answer(task, reply) {
    if (this.tasks.get(task.id) !== task) return;
    this.tasks.delete(task.id);
    this.tasksDone += 1;
    if (this.state !== 'stopped') {
      this.queueReply(this.fitted(reply));
    }
    this.drained();
  }

  /**
   * The frame of `reply`, within `max_frame`: a result too large for it is a
   * `result_too_large` error, an error too large is cut (see fittedError; null
   * when no error reply fits).
   */
  fitted(reply) {
    const limit = this.link.maxFrame;
    const frame = encodeFrame(reply);
    if (frame.length - 4 <= limit) return frame;
    if (reply.type === 'error') return fittedError(reply, frame.length - 4 - limit, limit);
    const size = reply.payload.length;
    return encodeFrame(
      errorReply(reply.id, 'result_too_large', `a result of ${size} bytes does not fit a frame of ${limit} bytes`, false),
    );
  }

  /**
   * Adds a reply's frame to the outbox, which is written in one write once the
   * replies that are ready now have joined it (after this turn's promise callbacks:
   * the handlers that completed together, and with batched replies the tasks that
   * started and finished meanwhile), or before a later task starts (see startWaiting).
   */
  queueReply(frame) {
    if (frame === null) return; // nothing fits in a frame (see fittedError)
    if (this.outbox.length === 0) this.heldSince = performance.now();
    this.outbox.push(frame);
    if (this.outboxQueued) return;
    this.outboxQueued = true;
    process.nextTick(() => {
      this.outboxQueued = false;
      this.writeOutbox();
    });
  }

  /** Writes every frame in the outbox, in one write. */
  writeOutbox() {
    const frames = this.outbox;
    if (frames.length === 0) return;
    this.outbox = [];
    this.link.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  }

  drained() {
    if (this.state === 'draining' && this.tasks.size === 0) this.finish(0);
  }

  async execute(task) {
    const ctx = new Context(this, task);
    if (task.timeoutMs > 0) ctx.deadline = Date.now() + task.timeoutMs;
    task.ctx = ctx;
    const handler = this.handlers.get(task.taskType);
    if (handler === undefined) {
      return errorReply(task.id, 'unknown_type', `no handler for task type ${JSON.stringify(task.taskType)}`, false);
    }
    let payload;
    try {
      payload = task.payload.length ? decodePayload(task.payload) : null;
    } catch (e) {
      return errorReply(task.id, 'bad_input', `payload is not MessagePack: ${e.message}`, false);
    }
    let value;
    try {
      value = await handler(payload, ctx);
    } catch (e) {
      return failure(task.id, e, ctx.signal);
    }
    let body;
    try {
      body = encodeResult(value === undefined ? null : value);
    } catch (e) {
      return errorReply(task.id, 'handler', `the result cannot be encoded as MessagePack: ${e.message}`, false);
    }
    return { type: 'result', id: task.id, payload: body };
  }

  /**
   * Writes `message` now, after the replies waiting in the outbox. A frame over
   * `max_frame` is refused (a `ProtocolError` to the caller): the manager would
   * take it for a broken stream and kill the worker.
   */
  send(message) {
    const frame = encodeFrame(message);
    if (frame.length - 4 > this.link.maxFrame) {
      throw new ProtocolError(`a ${message.type} frame of ${frame.length - 4} bytes is over max_frame ${this.link.maxFrame}`);
    }
    this.outbox.push(frame);
    this.writeOutbox();
  }
}

/**
 * The limit `hello.concurrency` sets: Infinity when it is absent, the value
 * when it is a uint32 of at least 1, and null for anything else (0 and nil included), which
 * PROTOCOL.md counts as a broken link.
 */
function helloConcurrency(value) {
  if (value === undefined) return Infinity;
  const n = wireInt(value);
  return Number.isInteger(n) && n >= 1 && n <= MAX_UINT32 ? n : null;
}

const MAX_UINT64 = 2n ** 64n - 1n;
const isUint32 = (v) => isUint(v, MAX_UINT32, BigInt(MAX_UINT32));
const isUint64 = (v) => isUint(v, Number.MAX_SAFE_INTEGER, MAX_UINT64);

/** Whether `value` (a number, or a bigint from a 64-bit encoding) is an integer from 0 to the max. */
function isUint(value, maxNumber, maxBigint) {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 && value <= maxNumber;
  return typeof value === 'bigint' && value >= 0n && value <= maxBigint;
}

/** Per manager message, the keys the worker acts on: [key, check, type named in the error]. */
const REQUIRED = new Map([
  [
    'hello',
    [
      ['heartbeat_ms', isUint64, 'uint64'],
      ['max_frame', isUint32, 'uint32'],
    ],
  ],
  [
    'task',
    [
      ['id', isUint64, 'uint64'],
      ['task_type', (v) => typeof v === 'string', 'str'],
      ['payload', (v) => v instanceof Uint8Array, 'bin'],
      ['attempt', isUint32, 'uint32'],
      ['timeout_ms', isUint64, 'uint64'],
    ],
  ],
  ['cancel', [['id', isUint64, 'uint64']]],
  ['shutdown', [['graceful', (v) => typeof v === 'boolean', 'bool']]],
]);

/**
 * Why `message` is malformed, or null: a key the worker acts on is missing or of
 * another type. The manager always sends every key, so that is a broken link, as a
 * malformed frame is (PROTOCOL.md, Every key), and as the Rust and Python SDKs take it.
 */
function malformed(message) {
  for (const [key, valid, type] of REQUIRED.get(message.type) ?? []) {
    if (!valid(message[key])) return `malformed ${message.type} message: \`${key}\` must be a ${type}`;
  }
  return null;
}

/**
 * The heartbeat period `hello.heartbeat_ms` asks for, in milliseconds: 0 for none;
 * 1000 when it is absent or not a number; at least 1; and a period past the longest
 * timer is clamped to it (beats more often than asked are harmless; Node would
 * otherwise beat every 1 ms).
 */
function heartbeatPeriod(value) {
  const ms = wireInt(value ?? 1000);
  if (ms === 0) return 0;
  return Math.min(MAX_TIMER_MS, Math.max(1, Number(ms) || 1000));
}

/** A value from the wire, for a message. */
function shown(value) {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/**
 * The frame of the error `reply`, `over` bytes over `limit`, within it: its message
 * cut to its head (never half a surrogate pair: the message must stay valid UTF-8)
 * and marked as cut, its kind and `retryable` kept (what the manager acts on). When
 * even an empty message does not fit (a huge custom kind, a tiny `max_frame`): kind
 * `handler` and the same `retryable`, as in the Python and Rust SDKs. Only a
 * `max_frame` too small for that (the manager's is at least 1024 bytes) leaves the
 * task unanswered (null), said on stderr: a frame over it would end the worker.
 */
function fittedError(reply, over, limit) {
  for (const note of [` … (cut to fit a frame of ${limit} bytes)`, '']) {
    // Each code unit cut is at least a byte: cut the excess and the note's bytes.
    const kept = head(reply.message, reply.message.length - over - Buffer.byteLength(note));
    const frame = encodeFrame({ ...reply, message: kept + note });
    if (frame.length - 4 <= limit) return frame;
  }
  const unfit = encodeFrame(errorReply(reply.id, 'handler', UNFIT_ERROR, reply.retryable));
  if (unfit.length - 4 <= limit) return unfit;
  process.stderr.write(`cortex-pool-worker: task ${String(reply.id)}: no error reply fits in a frame of ${limit} bytes; none was sent\n`);
  return null;
}

/** What an error reply that does not fit in a frame says instead, with kind `handler`. */
const UNFIT_ERROR = 'the error reply does not fit in a frame';

function errorReply(id, kind, message, retryable) {
  return { type: 'error', id, kind: wellFormed(String(kind)), message: oneLine(message), retryable };
}

/**
 * The error reply for what a handler threw (PROTOCOL.md, Error kinds). Once the task
 * was cancelled, whatever it throws (a TaskError too) is `cancelled`, as in the Rust
 * SDK: the caller asked it to stop, and a retry would run what they cancelled.
 */
function failure(id, error, signal) {
  if (signal.aborted) return errorReply(id, 'cancelled', `cancelled (${describe(error)})`, false);
  // Whatever the handler set `retryable` to, the reply says a boolean (the manager
  // refuses a worker that sends another type).
  if (error instanceof TaskError) {
    // null or undefined set after construction: the class's default, as in the constructor.
    const retryable = error.retryable ?? error.constructor.defaultRetryable ?? TaskError.defaultRetryable;
    return errorReply(id, error.kind, describe(error), Boolean(retryable));
  }
  const retryable = !(error !== null && typeof error === 'object' && error.retryable === false);
  return errorReply(id, 'handler', describe(error), retryable);
}

function describe(error) {
  try {
    if (error instanceof Error) return error.message || error.name;
    return String(error);
  } catch {
    // A value with no string form (an object without a prototype).
    return Object.prototype.toString.call(error);
  }
}

/** `text` on one line, and well-formed (the manager refuses invalid UTF-8). */
function oneLine(text) {
  return wellFormed(String(text).replace(/\s*\n\s*/g, ' '));
}

module.exports = { Worker, Context, PROTOCOL_VERSION };
