"""A cortex-pool worker in Python, written from ``docs/PROTOCOL.md`` alone.

Register handlers on a :class:`Worker` and call :meth:`Worker.main`::

    from cortex_worker import Worker

    worker = Worker()

    @worker.handler("echo")
    def echo(ctx, payload):
        return payload

    if __name__ == "__main__":
        worker.main()

A handler receives ``(ctx, payload)``: ``payload`` is the task's MessagePack payload
decoded (``None`` when empty) and ``ctx`` a :class:`Context` with the task's ``id``,
``attempt``, ``deadline`` and ``cancelled`` flag. Its return value is encoded with
MessagePack as the result. Raise :class:`RetryableError` or :class:`FatalError` to
fail the attempt with ``retryable`` true or false; any other exception fails it with
kind ``handler``, retryable. Tasks run concurrently, one thread each.

**Never write to the protocol stream.** With the ``stdio`` transport the protocol
uses copies of descriptors 0 and 1 and descriptor 1 is pointed at standard error at
start-up, so ``print()`` lands in the worker's log instead of corrupting the stream.

Dependencies: the standard library and ``msgpack`` (``pip install msgpack``).
"""

import os
import struct
import sys
import threading
import time

import msgpack

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_FRAME",
    "Worker",
    "Context",
    "Link",
    "open_link",
    "TaskError",
    "RetryableError",
    "FatalError",
    "BadInputError",
    "Cancelled",
    "ProtocolError",
]

PROTOCOL_VERSION = 1
"""The protocol version this module speaks."""

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""Frame body limit when ``CORTEX_MAX_FRAME`` is not set: 16 MiB."""

_PREFIX = struct.Struct(">I")
_LEVELS = ("error", "warn", "info", "debug")


class ProtocolError(Exception):
    """The link broke the protocol (bad frame, bad handshake)."""


class TaskError(Exception):
    """Fails the task attempt with the given error ``kind`` and ``retryable`` flag."""

    kind = "handler"
    retryable = True

    def __init__(self, message="", kind=None, retryable=None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        if retryable is not None:
            self.retryable = retryable


class RetryableError(TaskError):
    """A failure another attempt may fix: kind ``handler``, ``retryable`` true."""

    retryable = True


class FatalError(TaskError):
    """A failure no retry can fix: kind ``handler``, ``retryable`` false."""

    retryable = False


class BadInputError(FatalError):
    """The payload does not have the shape the handler needs: kind ``bad_input``."""

    kind = "bad_input"


class Cancelled(Exception):
    """Raised by :meth:`Context.check_cancelled`; answers the task as ``cancelled``."""


class Link:
    """One worker's two byte streams and the framing on them (PROTOCOL.md, Framing).

    ``reader`` and ``writer`` are binary file objects. Frames are written whole under a
    lock, so any thread may call :meth:`send`.
    """

    def __init__(self, reader, writer, max_frame=DEFAULT_MAX_FRAME):
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self._lock = threading.Lock()

    def read_frame(self):
        """Returns the next frame's body as ``bytes``, or ``None`` at a clean EOF.

        Raises :class:`ProtocolError` on a length over ``max_frame`` or a truncated frame.
        """
        prefix = self._read_exact(_PREFIX.size)
        if prefix is None:
            return None
        (length,) = _PREFIX.unpack(prefix)
        if length > self.max_frame:
            raise ProtocolError(f"frame of {length} bytes exceeds the maximum of {self.max_frame}")
        body = self._read_exact(length)
        if body is None and length:
            raise ProtocolError("stream ended inside a frame")
        return body or b""

    def _read_exact(self, n):
        chunks = []
        got = 0
        while got < n:
            chunk = self.reader.read(n - got)
            if not chunk:
                if got:
                    raise ProtocolError(f"stream ended {got} bytes into a {n}-byte read")
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read_message(self):
        """Returns the next message as a ``dict``, or ``None`` at EOF."""
        body = self.read_frame()
        if body is None:
            return None
        try:
            message = msgpack.unpackb(body, raw=False)
        except Exception as e:  # msgpack raises several unrelated types
            raise ProtocolError(f"malformed message: {e}") from e
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("a message must be a map with a string `type`")
        return message

    @staticmethod
    def encode(message):
        """The frame body for ``message`` (a ``dict`` whose first key is ``type``)."""
        return msgpack.packb(message, use_bin_type=True)

    def send(self, message):
        """Encodes and writes one frame. Raises :class:`ProtocolError` if it is too large."""
        body = self.encode(message)
        if len(body) > self.max_frame:
            raise ProtocolError(f"frame of {len(body)} bytes exceeds the maximum of {self.max_frame}")
        with self._lock:
            self.writer.write(_PREFIX.pack(len(body)) + body)
            self.writer.flush()


def open_link(environ=None):
    """Opens the link described by the ``CORTEX_*`` environment (PROTOCOL.md, Transports).

    ``stdio``: the protocol moves to duplicates of descriptors 0 and 1; descriptor 0 is
    replaced by ``/dev/null``, descriptor 1 and ``sys.stdout`` by standard error.
    ``fifo``: opens ``CORTEX_FIFO_TO_WORKER`` for reading, then
    ``CORTEX_FIFO_FROM_WORKER`` for writing.
    """
    env = os.environ if environ is None else environ
    max_frame = int(env.get("CORTEX_MAX_FRAME") or DEFAULT_MAX_FRAME)
    transport = env.get("CORTEX_TRANSPORT", "stdio")
    if transport == "stdio":
        sys.stdout.flush()
        proto_in = os.dup(0)
        proto_out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        reader = os.fdopen(proto_in, "rb")
        writer = os.fdopen(proto_out, "wb")
    elif transport == "fifo":
        reader = open(env["CORTEX_FIFO_TO_WORKER"], "rb")
        writer = open(env["CORTEX_FIFO_FROM_WORKER"], "wb")
    else:
        raise ProtocolError(f"unsupported CORTEX_TRANSPORT {transport!r} (expected stdio or fifo)")
    return Link(reader, writer, max_frame)


class Context:
    """What a handler knows about the task attempt it runs.

    Attributes: ``id``, ``task_type``, ``attempt`` (1 for the first), ``deadline``
    (a :func:`time.monotonic` value, or ``None`` without a time limit).
    """

    def __init__(self, worker, task_id, task_type, attempt, timeout_ms):
        self.id = task_id
        self.task_type = task_type
        self.attempt = attempt
        self.deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        self._worker = worker
        self._cancel = threading.Event()

    @property
    def cancelled(self):
        """Whether the manager has cancelled this task."""
        return self._cancel.is_set()

    def wait_cancelled(self, timeout=None):
        """Sleeps up to ``timeout`` seconds or until cancelled; returns ``cancelled``."""
        return self._cancel.wait(timeout)

    def check_cancelled(self):
        """Raises :class:`Cancelled` if the task has been cancelled."""
        if self.cancelled:
            raise Cancelled(f"task {self.id} cancelled")

    def remaining(self):
        """Seconds left before the deadline (``None`` without one, never negative)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def log(self, level, message):
        """Sends a ``log`` frame (level: error, warn, info or debug)."""
        self._worker.log(level, f"task {self.id}: {message}")


class Worker:
    """A set of handlers and the loop that serves them over a link."""

    def __init__(self):
        self._handlers = {}
        self._tasks = {}
        self._threads = {}
        self._state = threading.Lock()
        self._tasks_done = 0
        self._link = None
        self._stop = threading.Event()

    def handler(self, task_type):
        """Decorator registering ``fn(ctx, payload)`` for tasks of ``task_type``."""

        def register(fn):
            self._handlers[task_type] = fn
            return fn

        return register

    def log(self, level, message):
        """Sends a ``log`` frame to the manager (falls back to stderr before the handshake)."""
        if level not in _LEVELS:
            raise ValueError(f"log level must be one of {_LEVELS}")
        if self._link is None:
            print(f"[{level}] {message}", file=sys.stderr)
            return
        self._send({"type": "log", "level": level, "message": str(message)})

    # --- main loop -------------------------------------------------------------------

    def main(self):
        """Runs the worker on the link from the environment and exits the process.

        Exits with :meth:`run`'s status through ``os._exit``, so tasks still running
        after end of input or a non-graceful shutdown do not delay the exit.
        """
        try:
            code = self.run()
        except ProtocolError as e:
            print(f"cortex_worker: {e}", file=sys.stderr)
            code = 2
        sys.stderr.flush()
        os._exit(code)

    def run(self, link=None):
        """Serves tasks until shutdown or end of input; returns the exit status.

        0 after a shutdown or at end of input, 2 when the handshake fails.
        """
        link = link or open_link()
        hello = link.read_message()
        if hello is None:
            return 0
        if hello.get("type") != "hello":
            print(f"cortex_worker: expected hello first, got {hello.get('type')!r}", file=sys.stderr)
            return 2
        if hello.get("version") != PROTOCOL_VERSION:
            print(
                f"cortex_worker: manager speaks protocol version {hello.get('version')!r}, "
                f"this worker speaks {PROTOCOL_VERSION}",
                file=sys.stderr,
            )
            return 2
        if hello.get("max_frame"):
            link.max_frame = int(hello["max_frame"])
        self._link = link
        self._send(
            {
                "type": "ready",
                "version": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "task_types": sorted(self._handlers),
            }
        )
        interval = max(1, int(hello.get("heartbeat_ms") or 1000)) / 1000
        threading.Thread(target=self._heartbeats, args=(interval,), name="cortex-heartbeat", daemon=True).start()
        try:
            return self._serve(link)
        finally:
            self._stop.set()

    def _serve(self, link):
        while True:
            message = link.read_message()
            if message is None:
                return 0  # end of input: nobody is left to read replies
            kind = message["type"]
            if kind == "task" and isinstance(message.get("id"), int):
                self._start_task(message)
            elif kind == "cancel":
                with self._state:
                    ctx = self._tasks.get(message.get("id"))
                if ctx is not None:
                    ctx._cancel.set()
            elif kind == "shutdown":
                if message.get("graceful", True):
                    with self._state:
                        threads = list(self._threads.values())
                    for t in threads:
                        t.join()
                return 0
            # hello again or a message type from a newer protocol: ignore it

    # --- tasks -----------------------------------------------------------------------

    def _start_task(self, task):
        ctx = Context(
            self,
            task["id"],
            task.get("task_type", ""),
            task.get("attempt", 1),
            task.get("timeout_ms", 0),
        )
        payload = task.get("payload", b"")
        thread = threading.Thread(target=self._run_task, args=(ctx, payload), name=f"cortex-task-{ctx.id}", daemon=True)
        with self._state:
            self._tasks[ctx.id] = ctx
            self._threads[ctx.id] = thread
        thread.start()

    def _run_task(self, ctx, payload):
        try:
            reply = self._attempt(ctx, payload)
        finally:
            with self._state:
                self._tasks.pop(ctx.id, None)
                self._threads.pop(ctx.id, None)
                self._tasks_done += 1
        self._send(reply)

    def _attempt(self, ctx, payload):
        fn = self._handlers.get(ctx.task_type)
        if fn is None:
            return _error(ctx.id, "unknown_type", f"no handler for task type {ctx.task_type!r}", False)
        try:
            value = msgpack.unpackb(payload, raw=False) if payload else None
        except Exception as e:
            return _error(ctx.id, "bad_input", f"payload is not MessagePack: {e}", False)
        try:
            result = fn(ctx, value)
        except Cancelled as e:
            return _error(ctx.id, "cancelled", str(e) or "cancelled", False)
        except TaskError as e:
            return _error(ctx.id, e.kind, _describe(e), e.retryable)
        except Exception as e:
            if ctx.cancelled:
                return _error(ctx.id, "cancelled", f"cancelled ({_describe(e)})", False)
            return _error(ctx.id, "handler", _describe(e), True)
        try:
            body = msgpack.packb(result, use_bin_type=True)
        except Exception as e:
            return _error(ctx.id, "handler", f"result is not MessagePack-serialisable: {e}", False)
        reply = {"type": "result", "id": ctx.id, "payload": body}
        # Envelope overhead is small; check the real frame size.
        if len(Link.encode(reply)) > self._link.max_frame:
            return _error(
                ctx.id, "result_too_large", f"result of {len(body)} bytes does not fit max_frame", False
            )
        return reply

    # --- output ----------------------------------------------------------------------

    def _send(self, message):
        try:
            self._link.send(message)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            # The manager is gone (or the stream closed under us): exit promptly.
            sys.stderr.flush()
            os._exit(0)

    def _heartbeats(self, interval):
        while not self._stop.wait(interval):
            with self._state:
                done = self._tasks_done
                in_flight = len(self._tasks)
            self._send(
                {
                    "type": "heartbeat",
                    "rss_bytes": _rss_bytes(),
                    "cpu_ms": _cpu_ms(),
                    "tasks_done": done,
                    "in_flight": in_flight,
                }
            )


def _error(task_id, kind, message, retryable):
    return {"type": "error", "id": task_id, "kind": kind, "message": message, "retryable": retryable}


def _describe(e):
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_ms():
    t = os.times()
    return int((t.user + t.system) * 1000)
