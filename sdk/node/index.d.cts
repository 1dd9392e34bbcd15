// Type declarations for cortex-pool-worker (CommonJS; index.d.ts re-exports them for `import`).

/** The protocol version this SDK speaks. */
export declare const PROTOCOL_VERSION: 1;
/** The frame body limit when `CORTEX_MAX_FRAME` is not set: 16 MiB. */
export declare const DEFAULT_MAX_FRAME: number;

/** A log level of a `log` frame. */
export type LogLevel = "error" | "warn" | "info" | "debug";

/** What a handler knows about the task attempt it runs. */
export declare class Context {
  /** The task's id; a number (a bigint only above 2^53). Retries keep it. */
  readonly id: number | bigint;
  /** The task type the handler was registered under. */
  readonly taskType: string;
  /** 1 for the first attempt, 2 for the first retry, ... */
  readonly attempt: number;
  /** When the manager gives up on this attempt (Date.now() milliseconds), or null for no limit. */
  readonly deadline: number | null;
  /** Aborts when the manager cancels the task; `signal.reason` is a CancelledError. */
  readonly signal: AbortSignal;
  /** Milliseconds left before the deadline (Infinity without one, never negative). */
  remainingMs(): number;
  /** Sends a `log` frame, prefixed with the task id; throws a ProtocolError when the frame would be over `max_frame`. */
  log(level: LogLevel, message: string): void;
}

/** The context a handleInThread() handler gets: no log(), and a signal that never fires (a cancel terminates the thread). */
export interface ThreadContext {
  readonly id: number | bigint;
  readonly taskType: string;
  readonly attempt: number;
  readonly deadline: number | null;
  readonly signal: AbortSignal;
  remainingMs(): number;
}

/**
 * A task handler: gets the decoded MessagePack payload (null when empty; integers are
 * numbers when safe, bigints beyond) and the context; its return value (or what its
 * promise resolves to) is the result, encoded as MessagePack (undefined becomes null;
 * safe integers and bigints as integers).
 */
export type Handler<P = any, R = any> = (payload: P, ctx: Context) => R | Promise<R>;

/** Options of a Worker. */
export interface WorkerOptions {
  /** The most handlers run at once; the manager's `hello.concurrency` lowers it further. Default: unlimited. */
  concurrency?: number;
  /**
   * The longest, in milliseconds, that finished tasks' replies wait for later ones
   * while those start, to leave in one write (the worker says `batches_replies` in
   * `ready`; PROTOCOL.md, "Batched replies"). Only replies of handlers that
   * finished in the event loop's turn they started in wait; a handler that went
   * pending has its reply written as it finishes. 0: each reply is written before
   * a later task starts. Default: 1.
   */
  holdReplies?: number;
  /** Handlers by task type, as for handleAll(). */
  handlers?: Record<string, Handler>;
}

/** A set of handlers and the loop that serves them. */
export declare class Worker {
  constructor(options?: WorkerOptions);
  /** Registers a handler for tasks of `type`. */
  handle<P = any, R = any>(type: string, handler: Handler<P, R>): this;
  /** Registers every `type: handler` of an object (the Node original's handler map). */
  handleAll(handlers: Record<string, Handler>): this;
  /**
   * Runs the export `exportName` (default: `"default"`) of `module` (a path or URL) in a
   * worker_threads thread per task, so it may block without stopping heartbeats.
   * Payload and result cross threads by structured clone; a cancel terminates the thread.
   */
  handleInThread(type: string, module: string | URL, exportName?: string): this;
  /** Sends a `log` frame to the manager (stderr before the handshake); throws a ProtocolError when the frame would be over `max_frame`. */
  log(level: LogLevel, message: string): void;
  /**
   * Serves tasks on the link the CORTEX_* environment describes until `shutdown` or end
   * of input, then exits the process (0; 2 when the link or handshake fails, input that
   * ends inside a frame included).
   */
  run(options?: { env?: Record<string, string | undefined> }): Promise<never>;
}

/** Options of a TaskError. */
export interface TaskErrorOptions {
  /** The error kind sent to the manager (default `handler`). */
  kind?: string;
  /** Whether another attempt may succeed (default true; FatalError: false). */
  retryable?: boolean;
  cause?: unknown;
}

/** Fails the attempt with a chosen `kind` and `retryable` flag. */
export declare class TaskError extends Error {
  constructor(message: string, options?: TaskErrorOptions);
  readonly kind: string;
  readonly retryable: boolean;
}
/** Kind `handler`, retryable. */
export declare class RetryableError extends TaskError {}
/** Kind `handler`, not retryable: the task fails at once, without retries. */
export declare class FatalError extends TaskError {}
/** Kind `bad_input`, not retryable. */
export declare class BadInputError extends FatalError {}
/** Kind `cancelled`, not retryable; `ctx.signal.reason` after a cancel. */
export declare class CancelledError extends FatalError {}
/** The link broke the protocol; the worker exits with status 2. */
export declare class ProtocolError extends Error {}
