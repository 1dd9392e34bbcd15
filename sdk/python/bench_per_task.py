"""The Python SDK's per-task cost, in process: no manager, no pipe to wait on.

    python3 bench_per_task.py [SDK_DIR]

Runs ``example_worker.py``'s worker (from ``SDK_DIR``, default: this directory) over
an in-memory reader holding a ``hello`` and ``N`` (default 200 000) 64 B ``echo``
task frames, ``PER_READ`` (default 16, the default window) frames per read, and a
writer on ``/dev/null`` (written through its descriptor, as a pipe would be).
Prints tasks/s and CPU microseconds per task. ``SETUP_ONLY=1`` builds the frames
and stops, so that instruction counts of two runs can take the set-up out::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python3 bench_per_task.py

(run with ``N=2000`` and ``N=20000``, with and without ``SETUP_ONLY=1``; the
worker's instructions per task are the difference of the differences / 18 000).
"""

import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else HERE)

import msgpack  # noqa: E402

import cortex_worker  # noqa: E402

N = int(os.environ.get("N", "200000"))
PER_READ = int(os.environ.get("PER_READ", "16"))


def frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


class Reader:
    """Hands out the ``hello``, then ``PER_READ`` task frames per read, then EOF."""

    def __init__(self, hello, frames):
        chunks = [hello] + [b"".join(frames[i : i + PER_READ]) for i in range(0, len(frames), PER_READ)]
        self.chunks = chunks[::-1]

    def read1(self, n):
        return self.chunks.pop() if self.chunks else b""


def main():
    hello = frame(
        {"type": "hello", "version": 1, "worker_id": "w", "heartbeat_ms": 1000, "max_frame": 1 << 24, "concurrency": PER_READ}
    )
    frames = [
        frame(
            {
                "type": "task",
                "id": i + 1,
                "task_type": "echo",
                "payload": msgpack.packb(str(i).rjust(35, "x")),
                "attempt": 1,
                "timeout_ms": 300_000,
            }
        )
        for i in range(N)
    ]
    worker = importlib.import_module("example_worker").worker
    if os.environ.get("SETUP_ONLY"):
        return
    with open(os.devnull, "wb") as writer:
        link = cortex_worker.Link(Reader(hello, frames), writer)
        wall, cpu = time.perf_counter(), time.process_time()
        worker.run(link)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{N / wall:,.0f} tasks/s, {cpu * 1e6 / N:.2f} us CPU per task")


if __name__ == "__main__":
    main()
