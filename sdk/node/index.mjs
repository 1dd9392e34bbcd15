// The ES module face of cortex-pool-worker; the implementation is index.cjs, so
// `import` and `require` share one copy (and one set of error classes).
import sdk from './index.cjs';

export const {
  Worker,
  Context,
  PROTOCOL_VERSION,
  DEFAULT_MAX_FRAME,
  TaskError,
  RetryableError,
  FatalError,
  BadInputError,
  CancelledError,
  ProtocolError,
} = sdk;
export default sdk;
