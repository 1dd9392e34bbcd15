// Type declarations for cortex-pool-worker as an ES module: the named exports of
// index.d.cts, and the same object as the default export.
export * from './index.cjs';

declare const sdk: typeof import('./index.cjs');
export default sdk;
