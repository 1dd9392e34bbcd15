// A CPU-bound handler for Worker.handleInThread: it may block its own thread freely.
export default function spin({ ms = 0 } = {}) {
  const end = Date.now() + ms;
  while (Date.now() < end);
  return { spun_ms: ms };
}
