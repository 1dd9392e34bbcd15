'use strict';
/**
 * cortex-pool-worker: write cortex-pool workers in JavaScript.
 *
 *     const { Worker } = require('cortex-pool-worker');
 *     new Worker().handle('echo', async (payload, ctx) => payload).run();
 *
 * See README.md; the protocol underneath is docs/PROTOCOL.md of cortex-pool.
 */

const { Worker, Context, PROTOCOL_VERSION } = require('./lib/worker.cjs');
const errors = require('./lib/errors.cjs');
const { DEFAULT_MAX_FRAME } = require('./lib/framing.cjs');

module.exports = { Worker, Context, PROTOCOL_VERSION, DEFAULT_MAX_FRAME, ...errors };
