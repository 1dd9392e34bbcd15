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
kind ``handler``, retryable.

**Batches.** The worker reads whatever the manager has written, decodes every
complete frame in it, runs the handlers, and writes the replies that are ready in
one write. Replies of ``inline`` handlers are held while the next tasks of the same
read start, for at most ``Worker(hold_replies=0.001)`` seconds, and the worker says
``batches_replies`` in ``ready`` (see "Batched replies" in ``docs/PROTOCOL.md``:
when a worker dies holding several tasks, none of them loses an attempt and each
runs alone next). It says so, and holds replies, only when an ``inline`` handler is
registered when :meth:`Worker.run` starts: the claim costs the manager blame it can
no longer assign, so a worker that cannot batch must not make it, and an ``inline``
handler registered later runs inline without holding replies. Otherwise, and with
``hold_replies=0``, a finished task's reply is written before any later task starts (so a task that kills the process cannot take
earlier replies with it). Tasks run on a set of reusable threads, at most ``hello.concurrency`` at
once (every task at once when the manager sends no ``concurrency``); tasks beyond the
limit wait and start in arrival order, and a ``cancel`` of a waiting task is answered
at once with kind ``cancelled``. A handler registered with ``inline=True`` (one that
never blocks, like an echo) runs on the reading thread itself when a slot is free and
no task waits before it: no thread hop, its reply leaves with the batch; it sees
``cancelled`` only as it was when it started.

**Never write to the protocol stream.** With the ``stdio`` transport the protocol
uses copies of descriptors 0 and 1; with either transport descriptor 1 (and
``sys.stdout``) is pointed at standard error at start-up, so ``print()`` lands in the
worker's log instead of corrupting the stream or vanishing.

Dependencies: the standard library and ``msgpack`` (``pip install msgpack``).
"""

import collections
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
_U64_MAX = (1 << 64) - 1
_RESULT_ID = b"\x83\xa4type\xa6result\xa2id"  # fixmap(3) "type" "result" "id"
_PAYLOAD_BIN8 = tuple(b"\xa7payload\xc4" + bytes((n,)) for n in range(0x100))  # "payload" bin 8 of n bytes
_FIXINT = tuple(bytes((n,)) for n in range(0x80))
_UINT8 = struct.Struct(">BB")
_UINT16 = struct.Struct(">BH")
_UINT32 = struct.Struct(">BI")
_UINT64 = struct.Struct(">BQ")
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

    ``reader`` and ``writer`` are binary file objects. Reads take whatever is available
    (``read1`` when the reader has it), so a batch of frames costs one system call.
    Frames are written whole under a lock, so any thread may call :meth:`send` or
    :meth:`send_many`.
    """

    def __init__(self, reader, writer, max_frame=DEFAULT_MAX_FRAME):
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self._lock = threading.Lock()
        self._fd = _descriptor(writer)
        self._read = getattr(reader, "read1", None) or reader.read
        self._buf = bytearray()
        self._eof = False
        self._pending = collections.deque()  # bodies split off but not yet returned

    def read_bodies(self):
        """Returns the bodies of every complete frame available, reading once if none is.

        Blocks only while no complete frame is buffered. Returns an empty list at a
        clean end of input. Raises :class:`ProtocolError` on a length over ``max_frame``
        or a stream that ends inside a frame.
        """
        while True:
            bodies = self._split()
            if bodies or self._eof:
                if self._eof and self._buf and not bodies:
                    raise ProtocolError(f"stream ended {len(self._buf)} bytes into a frame")
                return bodies
            chunk = self._read(READ_CHUNK)
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk

    def _split(self):
        buf = self._buf
        size = len(buf)
        offset = 0
        bodies = []
        while size - offset >= 4:
            (length,) = _PREFIX.unpack_from(buf, offset)
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the maximum of {self.max_frame}")
            end = offset + 4 + length
            if end > size:
                break
            bodies.append(bytes(buf[offset + 4 : end]))
            offset = end
        if offset:
            del buf[:offset]
        return bodies

    def read_frame(self):
        """Returns the next frame's body as ``bytes``, or ``None`` at a clean EOF."""
        if not self._pending:
            self._pending.extend(self.read_bodies())
        return self._pending.popleft() if self._pending else None

    def read_messages(self):
        """Every message available (see :meth:`read_bodies`); empty at end of input."""
        bodies = self.read_bodies() if not self._pending else list(self._pending)
        self._pending.clear()
        return _decode_all(bodies)

    def read_message(self, validate=True):
        """Returns the next message as a ``dict``, or ``None`` at EOF.

        ``validate=False`` checks only that it is a map with a string ``type``
        (the handshake reads ``type`` and ``version`` before the other keys:
        a manager of another version may have changed them).
        """
        body = self.read_frame()
        return None if body is None else decode(body, validate)

    @staticmethod
    def encode(message):
        """The frame body for ``message`` (a ``dict`` whose first key is ``type``)."""
        return msgpack.packb(message, use_bin_type=True)

    def frame(self, message):
        """The whole frame (prefix and body) for ``message``.

        Raises :class:`ProtocolError` if it is larger than ``max_frame``.
        """
        body = msgpack.packb(message, use_bin_type=True)
        if len(body) > self.max_frame:
            raise ProtocolError(f"frame of {len(body)} bytes exceeds the maximum of {self.max_frame}")
        return _PREFIX.pack(len(body)) + body

    def frame_result(self, task_id, payload):
        """The whole frame of ``{"type": "result", "id": task_id, "payload": payload}``.

        Byte for byte what :meth:`frame` makes of that map, framed by hand: the keys
        and the headers are fixed bytes, so the map is never built nor encoded.
        Raises :class:`ProtocolError` if it is larger than ``max_frame``.
        """
        if task_id.__class__ is not int or not 0 <= task_id <= _U64_MAX:
            return self.frame({"type": "result", "id": task_id, "payload": payload})
        size = len(payload)
        head = _RESULT_ID + _uint(task_id) + (_PAYLOAD_BIN8[size] if size < 0x100 else _payload_bin(size))
        length = len(head) + size
        if length > self.max_frame:
            raise ProtocolError(f"frame of {length} bytes exceeds the maximum of {self.max_frame}")
        return b"".join((_PREFIX.pack(length), head, payload))

    def send(self, message):
        """Encodes and writes one frame. Raises :class:`ProtocolError` if it is too large."""
        self.send_many([self.frame(message)])

    def send_many(self, frames):
        """Writes whole frames (from :meth:`frame`) in one write.

        A writer with a descriptor is written with ``os.write`` (no copy into its
        buffer, one system call for a pipe that has room); any other with ``write``
        and ``flush``.
        """
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        with self._lock:
            if self._fd is None:
                self.writer.write(data)
                self.writer.flush()
                return
            written = os.write(self._fd, data)
            if written < len(data):
                view = memoryview(data)
                while written < len(data):
                    written += os.write(self._fd, view[written:])


def _descriptor(writer):
    """``writer``'s descriptor after flushing what it buffered, or ``None`` without one."""
    try:
        fd = writer.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    writer.flush()
    return fd


def _uint(n):
    """MessagePack's shortest encoding of the unsigned integer ``n`` (< 2**64)."""
    if n < 0x80:
        return _FIXINT[n]
    if n < 0x100:
        return _UINT8.pack(0xCC, n)
    if n < 0x10000:
        return _UINT16.pack(0xCD, n)
    if n < 0x100000000:
        return _UINT32.pack(0xCE, n)
    return _UINT64.pack(0xCF, n)


def _payload_bin(size):
    """The key ``payload`` and a bin 16 or bin 32 header for ``size`` (>= 256) bytes."""
    if size < 0x10000:
        return b"\xa7payload" + _UINT16.pack(0xC5, size)
    return b"\xa7payload" + _UINT32.pack(0xC6, size)


READ_CHUNK = 256 * 1024
"""The most bytes one read asks for."""


def decode(body, validate=True):
    """The message in a frame body, as a ``dict``; :class:`ProtocolError` if it is none.

    ``validate=False`` leaves the keys of its type unchecked (see :func:`check_keys`).
    """
    return _decode_all((body,), validate)[0]


def _decode_all(bodies, validate=True):
    """The messages in ``bodies``, as dicts (see :func:`decode`)."""
    unpackb = msgpack.unpackb
    try:
        messages = [unpackb(body, raw=False) for body in bodies]
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed message: {e}") from e
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("a message must be a map with a string `type`")
        if validate:
            check_keys(message)
    return messages


def check_keys(message):
    """Raises :class:`ProtocolError` naming the first key of ``message`` (a map
    with a string ``type``) that its type needs and it lacks or holds wrongly."""
    required = _REQUIRED.get(message["type"])
    if required is not None:
        for key, valid, wanted in required:
            if not valid(message.get(key)):
                raise ProtocolError(f"malformed {message['type']} message: `{key}` must be a {wanted}")


def _is_uint(bits):
    """A check that a value is an unsigned integer (not a bool) of at most ``bits`` bits."""
    top = (1 << bits) - 1
    return lambda v: v.__class__ is int and 0 <= v <= top


_REQUIRED = {
    "hello": (
        ("worker_id", lambda v: v.__class__ is str, "str"),
        ("heartbeat_ms", _is_uint(64), "uint64"),
        ("max_frame", _is_uint(32), "uint32"),
    ),
    "task": (
        ("id", _is_uint(64), "uint64"),
        ("task_type", lambda v: v.__class__ is str, "str"),
        ("payload", lambda v: v.__class__ is bytes, "bin"),
        ("attempt", _is_uint(32), "uint32"),
        ("timeout_ms", _is_uint(64), "uint64"),
    ),
    "cancel": (("id", _is_uint(64), "uint64"),),
    "shutdown": (("graceful", lambda v: v.__class__ is bool, "bool"),),
}
"""The keys a worker acts on, per manager message, with their checks: a message
that lacks one or has one of another type is a broken link, as a malformed frame
is (PROTOCOL.md, "Every key": the manager always sends every key)."""


def open_link(environ=None):
    """Opens the link described by the ``CORTEX_*`` environment (PROTOCOL.md, Transports).

    ``stdio``: the protocol moves to duplicates of descriptors 0 and 1 (1's made when
    this module was imported, in a worker the manager started); descriptor 0 is
    replaced by ``/dev/null``, descriptor 1 and ``sys.stdout`` by standard error.
    ``fifo``: opens ``CORTEX_FIFO_TO_WORKER`` for reading, then
    ``CORTEX_FIFO_FROM_WORKER`` for writing, then points descriptor 1 and
    ``sys.stdout`` at standard error too (what the manager gave as descriptor 1 is
    not read by anyone, so ``print()`` would otherwise be lost); exits 2 with a message if the manager
    goes away first (our parent process changes) or does not open its ends within
    ``FIFO_OPEN_TIMEOUT`` seconds.
    """
    env = os.environ if environ is None else environ
    max_frame = int(env.get("CORTEX_MAX_FRAME") or DEFAULT_MAX_FRAME)
    transport = env.get("CORTEX_TRANSPORT", "stdio")
    if transport == "stdio":
        proto_in = os.dup(0)
        proto_out = _take_protocol_out()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        _stdout_to_stderr()
        reader = os.fdopen(proto_in, "rb", buffering=0)
        writer = os.fdopen(proto_out, "wb")
    elif transport == "fifo":
        reader, writer = _open_fifos(env)
        _stdout_to_stderr()
    else:
        raise ProtocolError(f"unsupported CORTEX_TRANSPORT {transport!r} (expected stdio or fifo)")
    return Link(reader, writer, max_frame)


def _stdout_to_stderr():
    """Points descriptor 1 and ``sys.stdout`` at standard error, so that ``print()``
    and native writes to descriptor 1 land in the worker's log, whatever the
    transport (the protocol never uses descriptor 1 itself once the link is open).
    What ``sys.stdout`` still buffers is flushed once descriptor 1 is standard
    error: to the log, never onto the protocol's stream ahead of ``ready``."""
    os.dup2(2, 1)
    sys.stdout.flush()
    sys.stdout = sys.stderr


# Where the process keeps the copy of descriptor 1 made for the protocol at
# import: an attribute of ``sys``, so that a second copy of this module (a
# reload, or the same file imported under two names) finds it instead of
# copying descriptor 1 again, which then is standard error.
_KEPT_ON_SYS = "_cortex_worker_protocol_out"


def _protect_stdout_at_import():
    """In a worker the manager started itself (``CORTEX_TRANSPORT`` is ``stdio`` or
    ``fifo``, and our parent is ``CORTEX_MANAGER_PID``), points descriptor 1 and
    ``sys.stdout`` at standard error as soon as this module is imported, so that
    the worker's own code after the import (a banner, a model loading) cannot
    print onto the protocol's stream before :meth:`Worker.run` opens the link,
    also where prints are not buffered (``python -u``, ``PYTHONUNBUFFERED``).
    Import this module before anything that prints. A process the worker starts
    inherits the environment but not the pool as its parent: its stdout stays
    its own. A worker started through a wrapper is protected when the link opens.
    With ``stdio`` the copy of descriptor 1 kept for the protocol is left for
    :func:`open_link`."""
    if hasattr(sys, _KEPT_ON_SYS):
        return
    transport = os.environ.get("CORTEX_TRANSPORT")
    if transport not in ("stdio", "fifo") or _manager_pid(os.environ) != os.getppid():
        return
    setattr(sys, _KEPT_ON_SYS, os.dup(1) if transport == "stdio" else None)
    _stdout_to_stderr()


def _take_protocol_out():
    """The protocol's copy of descriptor 1: the one kept at import, once, else a
    new copy of descriptor 1 as it is now."""
    kept = getattr(sys, _KEPT_ON_SYS, None)
    if kept is None:
        return os.dup(1)
    setattr(sys, _KEPT_ON_SYS, None)
    return kept


#: How long a fifo worker waits for the manager to open its ends, in seconds.
FIFO_OPEN_TIMEOUT = 60.0


def _manager_pid(env):
    """The manager's pid from ``CORTEX_MANAGER_PID``; ``None`` when unset or no
    pid."""
    try:
        pid = int(env.get("CORTEX_MANAGER_PID", ""))
    except ValueError:
        return None
    return pid if pid > 0 else None


def _manager_gone(parent, manager):
    """Whether the manager went away: our parent changed from ``parent``, what it
    was when the worker began to open its FIFOs (we were re-parented, to init or
    a subreaper), or the manager's pid ``manager`` names no process (a worker
    orphaned before it looked had its new parent from the start). The parent
    need not be the manager: a worker may be started through a wrapper (a shell
    script, ``uv run``), which stays its parent while the manager lives."""
    if os.getppid() != parent:
        return True
    if manager is None:
        return False
    try:
        os.kill(manager, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        # Alive, and another user's (EPERM), or no pid a process can have.
        return False
    return False


def _open_fifos(env):
    """Opens both FIFOs while a watcher thread ends the process (exit 2) if the
    manager goes away (see ``_manager_gone``) or does not open its ends in time:
    the opens block until it does, and nothing else would ever wake them."""
    opened = threading.Event()
    parent, manager = os.getppid(), _manager_pid(env)

    def watch():
        deadline = time.monotonic() + FIFO_OPEN_TIMEOUT
        while not opened.wait(0.1):
            if _manager_gone(parent, manager):
                reason = "the manager went away before opening its FIFOs"
            elif time.monotonic() > deadline:
                reason = "the manager did not open its FIFOs in time"
            else:
                continue
            sys.stderr.write(f"cortex_worker: {reason}\n")
            sys.stderr.flush()
            os._exit(2)

    threading.Thread(target=watch, name="cortex-fifo-watch", daemon=True).start()
    try:
        reader = open(env["CORTEX_FIFO_TO_WORKER"], "rb", buffering=0)
        writer = open(env["CORTEX_FIFO_FROM_WORKER"], "wb")
    finally:
        opened.set()
    return reader, writer


class Context:
    """What a handler knows about the task attempt it runs.

    Attributes: ``id``, ``task_type``, ``attempt`` (1 for the first), ``deadline``
    (a :func:`time.monotonic` value, or ``None`` without a time limit), counted from
    when the task started (a task waiting for a free slot has not started).
    """

    __slots__ = ("id", "task_type", "attempt", "deadline", "_timeout_ms", "_worker", "_cancelled", "_event")

    def __init__(self, worker, task_id, task_type, attempt, timeout_ms):
        self.id = task_id
        self.task_type = task_type
        self.attempt = attempt
        self._timeout_ms = timeout_ms
        self.deadline = None
        self._worker = worker
        self._cancelled = False
        self._event = None

    def _cancel(self):
        with self._worker._state:
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    @property
    def cancelled(self):
        """Whether the manager has cancelled this task."""
        return self._cancelled

    def wait_cancelled(self, timeout=None):
        """Sleeps up to ``timeout`` seconds or until cancelled; returns ``cancelled``."""
        with self._worker._state:
            if self._cancelled:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def check_cancelled(self):
        """Raises :class:`Cancelled` if the task has been cancelled."""
        if self._cancelled:
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

    def __init__(self, hold_replies=0.001):
        """``hold_replies``: the longest, in seconds, that replies of ``inline``
        handlers are held while later tasks of the same read start (0: each reply
        is written before a later task starts)."""
        if hold_replies < 0:
            raise ValueError(f"hold_replies must be at least 0, got {hold_replies!r}")
        self._hold = hold_replies
        self._batching = False  # whether ``ready`` said batches_replies (set by run)
        self._held_since = 0.0  # when the oldest reply in _replies was framed
        self._handlers = {}
        self._inline = set()
        self._state = threading.Lock()
        self._work = threading.Condition(self._state)
        self._waiting = collections.deque()  # (ctx, payload) in arrival order
        self._running = {}  # task id -> Context, tasks started and not answered
        self._limit = None  # hello.concurrency; None: every task at once
        self._threads = 0
        self._idle = 0
        self._draining = False  # a graceful shutdown came: late tasks are refused
        self._reading = False  # the reading thread is in a read during the drain
        self._exit_when_drained = False  # set by main(): see _finish
        self._replies = []  # frames of finished tasks not yet written
        self._encoder = _Encoder()  # the reading thread's (inline handlers' results)
        self._tasks_done = 0
        self._link = None
        self._stop = threading.Event()

    def handler(self, task_type, inline=False):
        """Decorator registering ``fn(ctx, payload)`` for tasks of ``task_type``.

        ``inline=True`` declares a handler that never blocks: it may run on the
        reading thread (see the module documentation). Register handlers before
        :meth:`run`: ``ready`` lists the task types and says ``batches_replies``
        from what is registered then; an ``inline`` handler registered later still
        runs inline but never holds replies, as ``ready`` did not announce it.
        """

        def register(fn):
            self._handlers[task_type] = fn
            if inline:
                self._inline.add(task_type)
            else:
                self._inline.discard(task_type)
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
        after end of input or a non-graceful shutdown do not delay the exit. When
        the drain of a graceful shutdown ends while the reading thread is blocked
        in a read, the thread that answered the last task ends the process (status
        0) itself: nothing would wake the read.
        """
        self._exit_when_drained = True
        try:
            code = self.run()
        except ProtocolError as e:
            print(f"cortex_worker: {e}", file=sys.stderr)
            code = 2
        _exit(code)

    def run(self, link=None):
        """Serves tasks until shutdown or end of input; returns the exit status.

        0 after a shutdown or at end of input, 2 when the handshake fails; raises
        :class:`ProtocolError` when the link breaks later (a malformed frame, or a
        message without a key it needs), which :meth:`main` exits 2 for. After a
        graceful shutdown it returns once every task in flight has replied (end of
        input meanwhile does not cut that short); called other than by
        :meth:`main`, a read blocked then returns first (see :meth:`_finish`).
        """
        link = link or open_link()
        hello = link.read_message(validate=False)
        if hello is None:
            return 0
        if hello.get("type") != "hello":
            print(f"cortex_worker: expected hello first, got {hello.get('type')!r}", file=sys.stderr)
            return 2
        version = hello.get("version")
        if version.__class__ is not int or version != PROTOCOL_VERSION:
            print(
                f"cortex_worker: manager speaks protocol version {hello.get('version')!r}, "
                f"this worker speaks {PROTOCOL_VERSION}",
                file=sys.stderr,
            )
            return 2
        check_keys(hello)
        # Absent: no limit. Present, ``nil`` included, it must be a count.
        if "concurrency" in hello:
            concurrency = hello["concurrency"]
            if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 0xFFFF_FFFF:
                print(f"cortex_worker: hello.concurrency must be an integer from 1 to 4294967295, got {concurrency!r}", file=sys.stderr)
                return 2
            self._limit = concurrency
        if hello.get("max_frame"):
            link.max_frame = int(hello["max_frame"])
        # Only inline handlers' replies are ever held, and only this claim lets
        # them be: decided once, here, so a handler registered after ``ready``
        # cannot start batching the manager was not told of.
        self._batching = self._hold > 0 and bool(self._inline)
        ready = {
            "type": "ready",
            "version": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "task_types": sorted(self._handlers),
            "batches_replies": self._batching,
        }
        try:
            link.send_many([link.frame(ready)])
        except (BrokenPipeError, ConnectionResetError, ValueError):
            _exit(0)
        # Only now may other threads' log frames use the link: after ``ready``.
        self._link = link
        interval = _heartbeat_interval(hello)
        if interval is not None:
            threading.Thread(target=self._heartbeats, args=(interval,), name="cortex-heartbeat", daemon=True).start()
        try:
            return self._serve(link)
        finally:
            self._stop.set()

    def _serve(self, link):
        """Reads and dispatches messages until a shutdown or end of input; the exit status."""
        while True:
            messages = link.read_messages()
            if not messages:
                return 0  # end of input: nobody is left to read replies
            rest = iter(messages)
            for message in rest:
                kind = message["type"]
                if kind == "task":
                    self._on_task(message)
                elif kind == "cancel":
                    self._on_cancel(message["id"])
                elif kind == "shutdown":
                    self._flush()
                    if message["graceful"]:
                        return self._drain(link, rest)
                    return 0
                # hello again or a message type from a newer protocol: ignore it
            self._flush()

    def _drain(self, link, rest):
        """Serves a graceful shutdown; ``rest``: the messages read after it.

        Reads on while the tasks in flight (running or waiting for a slot) finish:
        a late task is not run but answered ``shutting_down`` (retryable), a
        ``cancel`` still applies, a non-graceful ``shutdown`` ends the run at once.
        Returns 0 once every task in flight has replied; end of input only stops
        the reading (:meth:`_await_drained`).
        """
        with self._state:
            self._draining = True
        messages = rest
        while True:
            for message in messages:
                kind = message["type"]
                if kind == "task":
                    self._refuse(message["id"])
                elif kind == "cancel":
                    self._on_cancel(message["id"])
                elif kind == "shutdown" and not message["graceful"]:
                    self._flush()
                    return 0
            self._flush()
            messages = self._read_unless_drained(link)
            if messages is None:
                return 0  # the drain is over
            if not messages:
                return self._await_drained()

    def _read_unless_drained(self, link):
        """During a drain: the next messages (empty at end of input), or ``None``
        without reading when every task in flight has replied (and been written).

        While the read blocks, the thread that answers the last task ends the
        process under :meth:`main` (see :meth:`_finish`)."""
        with self._state:
            if not self._waiting and not self._running:
                self._flush_locked()
                return None
            self._reading = True
        try:
            return link.read_messages()
        finally:
            with self._state:
                self._reading = False

    def _await_drained(self):
        """After end of input during a drain: waits until every task in flight has
        replied, writing the replies as they come; returns 0."""
        with self._state:
            while self._waiting or self._running:
                self._flush_locked()
                self._work.wait()
            self._flush_locked()
        return 0

    def _refuse(self, task_id):
        """Answers a task that came after a graceful ``shutdown``: it does not run."""
        frame = self._link.frame(_error(task_id, "shutting_down", "the worker is shutting down", True))
        with self._state:
            self._tasks_done += 1
            self._replies.append(frame)

    # --- tasks -----------------------------------------------------------------------

    def _on_task(self, task):
        ctx = Context(self, task["id"], task["task_type"], task["attempt"], task["timeout_ms"])
        payload = task["payload"]
        with self._state:
            limit = self._limit
            free = limit is None or (not self._waiting and len(self._running) < limit)
            if free and ctx.task_type in self._inline:
                self._running[ctx.id] = ctx
                inline = True
                self._flush_held_locked()
            else:
                self._waiting.append((ctx, payload))
                inline = False
                if len(self._waiting) > self._idle and (limit is None or self._threads < limit):
                    self._threads += 1
                    self._idle += 1
                    threading.Thread(target=self._executor, name="cortex-task", daemon=True).start()
                else:
                    self._work.notify()
        if inline:
            self._finish(ctx, self._attempt(ctx, payload, self._encoder))

    def _on_cancel(self, task_id):
        with self._state:
            ctx = self._running.get(task_id)
            if ctx is None:
                for i, (waiting, _) in enumerate(self._waiting):
                    if waiting.id == task_id:
                        del self._waiting[i]
                        self._tasks_done += 1
                        self._replies.append(
                            self._link.frame(_error(task_id, "cancelled", f"task {task_id} cancelled before it started", False))
                        )
                        break
        if ctx is not None:
            ctx._cancel()
        # A cancel for a task that is not here (already answered) is ignored.

    def _executor(self):
        """One task thread: runs waiting tasks in arrival order while there are any."""
        state = self._state
        encoder = _Encoder()
        while True:
            with state:
                while not self._waiting or (self._limit is not None and len(self._running) >= self._limit):
                    if not self._waiting:
                        self._flush_locked()
                    self._work.wait()
                self._idle -= 1
                ctx, payload = self._waiting.popleft()
                self._running[ctx.id] = ctx
                self._flush_locked()  # earlier replies leave before this task starts
            self._finish(ctx, self._attempt(ctx, payload, encoder), executor=True)

    def _finish(self, ctx, outcome, executor=False):
        """Frames what :meth:`_attempt` returned and records it; it is written before
        the next task starts. A result too large for a frame answers
        ``result_too_large``; an error too large keeps its kind and ``retryable``
        with its message shortened (:func:`_fitted_error`).
        ``executor``: the calling task thread is idle again.

        During a drain it wakes the reading thread waiting for it; when this task
        was the last in flight and the reading thread is blocked in a read under
        :meth:`main`, it writes the replies and ends the process (status 0)."""
        link = self._link
        try:
            if outcome.__class__ is bytes:
                frame = link.frame_result(ctx.id, outcome)
            else:
                frame = link.frame(outcome)
        except ProtocolError as e:
            if outcome.__class__ is bytes:
                frame = link.frame(_error(ctx.id, "result_too_large", str(e), False))
            else:
                frame = _fitted_error(link, outcome)
        except Exception as e:
            # An error reply that cannot be encoded (a message with text no
            # UTF-8 can carry): answered all the same, saying so.
            frame = link.frame(_error(ctx.id, "handler", f"the reply could not be encoded: {_describe(e)}", False))
        with self._state:
            if executor:
                self._idle += 1
            self._running.pop(ctx.id, None)
            self._tasks_done += 1
            if not self._replies:
                self._held_since = time.monotonic()
            self._replies.append(frame)
            if self._draining:
                if self._reading and self._exit_when_drained and not self._running and not self._waiting:
                    self._flush_locked()
                    _exit(0)
                self._work.notify_all()
            elif self._waiting:
                self._work.notify()

    def _flush(self):
        with self._state:
            self._flush_locked()

    def _flush_held_locked(self):
        """Before an inline task starts: writes the replies held for ``hold_replies``
        or longer (all of them when ``ready`` did not say ``batches_replies``)."""
        if self._replies and (not self._batching or time.monotonic() - self._held_since >= self._hold):
            self._flush_locked()

    def _flush_locked(self):
        """Writes every reply not yet written, in one write (holding ``_state``)."""
        if self._replies:
            frames = self._replies
            self._replies = []
            self._write(frames)

    def _attempt(self, ctx, payload, encoder):
        """Runs the task's handler: the result's encoding (``bytes``) or an error message.
        ``encoder``: an :class:`_Encoder` of the calling thread's own."""
        if ctx._timeout_ms:
            ctx.deadline = time.monotonic() + ctx._timeout_ms / 1000
        fn = self._handlers.get(ctx.task_type)
        if fn is None:
            return _error(ctx.id, "unknown_type", f"no handler for task type {ctx.task_type!r}", False)
        try:
            # Any key a MessagePack map may have (an integer too), not only a string.
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False) if payload else None
        except Exception as e:
            return _error(ctx.id, "bad_input", f"payload is not MessagePack: {e}", False)
        try:
            result = fn(ctx, value)
        except Cancelled as e:
            return _error(ctx.id, "cancelled", str(e) or "cancelled", False)
        except BaseException as e:
            # Once the task was cancelled, whatever it raises (a TaskError too)
            # is ``cancelled``, as in the Rust and Node SDKs: the caller asked it
            # to stop, and a retry would run what they cancelled. Any other
            # error (``SystemExit`` from ``sys.exit`` or argparse,
            # ``asyncio.CancelledError`` from a loop run inside the handler,
            # ``KeyboardInterrupt`` raised by its code: the pool stops workers
            # with SIGTERM, never SIGINT) is the handler's: the task is
            # answered, and the worker goes on.
            if ctx._cancelled:
                return _error(ctx.id, "cancelled", f"cancelled ({_describe(e)})", False)
            if isinstance(e, TaskError):
                return _task_error(ctx.id, e)
            return _error(ctx.id, "handler", _describe(e), True)
        try:
            return encoder.encode(result)
        except Exception as e:
            return _error(ctx.id, "handler", f"result is not MessagePack-serialisable: {e}", False)

    # --- output ----------------------------------------------------------------------

    def _send(self, message):
        self._write([self._link.frame(message)])

    def _write(self, frames):
        try:
            self._link.send_many(frames)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            # The manager is gone (or the stream closed under us): exit promptly.
            _exit(0)

    def _heartbeats(self, interval):
        while not self._stop.wait(interval):
            with self._state:
                done = self._tasks_done
                in_flight = len(self._running) + len(self._waiting)
            self._send(
                {
                    "type": "heartbeat",
                    "rss_bytes": _rss_bytes(),
                    "cpu_ms": _cpu_ms(),
                    "tasks_done": done,
                    "in_flight": in_flight,
                }
            )


class _Encoder:
    """Encodes results with one reused ``msgpack.Packer`` (``packb`` builds a new one per
    call); one per thread, as a packer is not thread-safe."""

    __slots__ = ("_packer",)

    KEEP = 1024 * 1024
    """A packer keeps the buffer its largest output grew; past this size it is let go."""

    def __init__(self):
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, value):
        """``value`` as MessagePack bytes."""
        data = self._packer.pack(value)
        if len(data) > self.KEEP:
            self._packer = msgpack.Packer(use_bin_type=True)
        return data


def _heartbeat_interval(hello):
    """Seconds between heartbeats: ``hello.heartbeat_ms`` (1 s when absent), or
    ``None`` for ``0``: send none."""
    ms = hello.get("heartbeat_ms")
    if ms is None:
        return 1.0
    if ms == 0:
        return None
    return max(1, int(ms)) / 1000


def _exit(code):
    """Ends the process now with ``code``, whatever other threads are doing."""
    sys.stderr.flush()
    os._exit(code)


def _task_error(task_id, e):
    """The error reply for the :class:`TaskError` ``e``: whatever the handler set its
    ``kind`` and ``retryable`` to, a string and a boolean (the manager refuses a
    worker that sends other types); ``None`` set after construction is the class's
    default, as in the constructor."""
    kind = type(e).kind if e.kind is None else e.kind
    retryable = type(e).retryable if e.retryable is None else e.retryable
    return _error(task_id, str(kind), _describe(e), bool(retryable))


def _error(task_id, kind, message, retryable):
    return {"type": "error", "id": task_id, "kind": kind, "message": message, "retryable": retryable}


def _fitted_error(link, reply):
    """The frame of the error ``reply`` with its message cut to fit ``max_frame``.

    Only the message can make an error reply large, and it is not what the manager
    acts on: the kind and ``retryable`` are, so they are kept as they are (answering
    ``result_too_large``, never retryable, would turn a retryable failure into a
    final one). Cut on a character boundary and marked as cut, like the Rust and
    Node SDKs. A reply that does not fit even with an empty message (a huge custom
    kind, a tiny ``max_frame``) is answered with kind ``handler`` and the same
    ``retryable``.
    """
    limit = link.max_frame
    note = f" … (cut to fit a frame of {limit} bytes)"
    text = str(reply["message"]).encode("utf-8", "backslashreplace")
    # What the reply takes without its message, plus the largest string header (5).
    room = limit - len(Link.encode(dict(reply, message=""))) - 5
    for suffix in (note, ""):
        keep = room - len(suffix.encode("utf-8"))
        if keep >= 0:
            try:
                return link.frame(dict(reply, message=text[:keep].decode("utf-8", "ignore") + suffix))
            except ProtocolError:
                pass
    return link.frame(_error(reply["id"], "handler", "the error reply does not fit in a frame", reply["retryable"]))


def _describe(e):
    """``Kind: message``, in text MessagePack can carry (an undecodable file name's
    surrogates are written as escapes); the kind alone when the error has no
    text, or when its ``str()`` itself fails."""
    try:
        message = str(e)
    except Exception:
        message = ""
    text = f"{type(e).__name__}: {message}" if message else type(e).__name__
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_ms():
    t = os.times()
    return int((t.user + t.system) * 1000)


# Last, once every name it uses is defined: before the importer's next line.
_protect_stdout_at_import()
