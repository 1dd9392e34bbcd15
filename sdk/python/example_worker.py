"""An example cortex-pool worker: echo, fail, crash, sleep and noisy handlers.

Run by the pool (or by test_cortex_worker.py) with the CORTEX_* environment set.
"""

import os
import sys

from cortex_worker import Cancelled, FatalError, Worker

worker = Worker()


@worker.handler("echo", inline=True)
def echo(ctx, payload):
    """Returns its payload unchanged (never blocks: runs on the reading thread)."""
    return payload


@worker.handler("fail")
def fail(ctx, payload):
    """``{"times": N, "fatal": bool}``: fails while ``attempt <= N``, then succeeds."""
    payload = payload or {}
    times = payload.get("times", 1)
    if ctx.attempt <= times:
        if payload.get("fatal"):
            raise FatalError(f"fatal failure on attempt {ctx.attempt}")
        raise RuntimeError(f"failing attempt {ctx.attempt} of {times}")
    return {"attempt": ctx.attempt}


@worker.handler("crash")
def crash(ctx, payload):
    """``{"code": N}``: the whole process exits with status N."""
    sys.stderr.flush()
    os._exit((payload or {}).get("code", 1))


@worker.handler("sleep")
def sleep(ctx, payload):
    """``{"ms": N}``: waits N milliseconds, stopping early when cancelled."""
    ms = (payload or {}).get("ms", 0)
    if ctx.wait_cancelled(ms / 1000):
        raise Cancelled(f"sleep cancelled (task {ctx.id})")
    return {"slept_ms": ms}


@worker.handler("noisy")
def noisy(ctx, payload):
    """Writes to stdout three ways (all must land on stderr), then echoes."""
    print("noisy handler: print()")
    sys.stdout.write("noisy handler: sys.stdout.write\n")
    os.write(1, b"noisy handler: os.write(1)\n")
    return payload


if __name__ == "__main__":
    worker.main()
