// Task handlers in the Node original's shape: one `async (data) => result` function
// per task type, as its worker-process.js registered them. Nothing in this file knows
// about cortex-pool; worker.cjs serves it unchanged.

module.exports = {
  // The original's placeholder handlers answered {status: 'completed', result: payload}.
  implementation: async (data) => ({ status: 'completed', result: data }),

  analysis: async (data) => {
    const words = String(data.text || '').split(/\s+/).filter(Boolean);
    return { status: 'completed', result: { words: words.length, longest: words.reduce((a, w) => (w.length > a.length ? w : a), '') } };
  },

  test: async (data) => {
    if (!data || !data.name) throw new Error('test needs a name');
    await new Promise((resolve) => setTimeout(resolve, 10));
    return { status: 'completed', result: `tested ${data.name}` };
  },
};
