// The original's handlers (handlers.cjs, unchanged) as a cortex-pool worker.
//
//   cortex-pool run tasks.jsonl -- node worker.cjs
//   CORTEX_POOL_WORKER="node /abs/path/worker.cjs" cortex-pool daemon start
const { Worker } = require('cortex-pool-worker');
const handlers = require('./handlers.cjs');

new Worker({ handlers }).run();
