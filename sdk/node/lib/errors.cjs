'use strict';
// Errors a handler throws to choose how its task attempt fails (PROTOCOL.md, Error kinds).

/** Fails the task attempt with an error `kind` and a `retryable` flag. */
class TaskError extends Error {
  /**
   * @param {string} message what went wrong, for people
   * @param {{kind?: string, retryable?: boolean, cause?: unknown}} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.kind = options.kind ?? new.target.defaultKind;
    this.retryable = options.retryable ?? new.target.defaultRetryable;
  }
}
TaskError.defaultKind = 'handler';
TaskError.defaultRetryable = true;

/** A failure another attempt may fix: kind `handler`, retryable. */
class RetryableError extends TaskError {}

/** A failure no retry can fix: kind `handler`, not retryable. The task ends at once. */
class FatalError extends TaskError {}
FatalError.defaultRetryable = false;

/** The payload does not have the shape the handler needs: kind `bad_input`, not retryable. */
class BadInputError extends FatalError {}
BadInputError.defaultKind = 'bad_input';

/** The task was cancelled by the manager: kind `cancelled`, not retryable. `ctx.signal.reason` is one. */
class CancelledError extends FatalError {}
CancelledError.defaultKind = 'cancelled';

/** The link broke the protocol (a bad frame, a bad handshake); the worker exits with status 2. */
class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

module.exports = {
  TaskError,
  RetryableError,
  FatalError,
  BadInputError,
  CancelledError,
  ProtocolError,
};
