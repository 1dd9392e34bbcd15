"""Drives example_worker.py over stdio with frames built from docs/PROTOCOL.md.

Run from sdk/python with ``python3 -m unittest`` (needs ``pip install msgpack``).
"""

import fcntl
import io
import os
import queue
import re
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import threading
import time
import unittest

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "example_worker.py")
PROTOCOL_MD = os.path.join(HERE, "..", "..", "docs", "PROTOCOL.md")
TIMEOUT = 10.0


def doc_examples():
    """The ```hex <direction> <message> blocks of PROTOCOL.md, as frame bytes."""
    with open(PROTOCOL_MD) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"^```hex (\S+) (\S+)\n(.*?)^```", text, re.S | re.M):
        data = " ".join(line.split("#")[0] for line in m.group(3).splitlines())
        out[(m.group(1), m.group(2))] = bytes.fromhex(data)
    return out


EXAMPLES = doc_examples()


def frame(message):
    """One frame as PROTOCOL.md says: u32 big-endian body length, MessagePack map body."""
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def read_messages(stream, count):
    """The next ``count`` frames of ``stream``, decoded."""
    messages = []
    for _ in range(count):
        (length,) = struct.unpack(">I", stream.read(4))
        messages.append(msgpack.unpackb(stream.read(length), raw=False))
    return messages


def hello(version=1, heartbeat_ms=60_000, max_frame=16 * 1024 * 1024, **extra):
    message = {"type": "hello", "version": version, "worker_id": "worker-7", "heartbeat_ms": heartbeat_ms, "max_frame": max_frame}
    message.update(extra)
    return frame(message)


def task(task_id, task_type, payload=None, attempt=1, timeout_ms=30_000, **extra):
    message = {
        "type": "task",
        "id": task_id,
        "task_type": task_type,
        "payload": b"" if payload is None else msgpack.packb(payload, use_bin_type=True),
        "attempt": attempt,
        "timeout_ms": timeout_ms,
    }
    message.update(extra)
    return frame(message)


class WorkerProcess:
    """example_worker.py as a child, its stdout split into frames by a reader thread."""

    def __init__(self, transport_env=None, script=WORKER):
        env = dict(os.environ)
        env.update(
            {
                "CORTEX_WORKER_ID": "worker-7",
                "CORTEX_TRANSPORT": "stdio",
                "CORTEX_MAX_FRAME": str(16 * 1024 * 1024),
                # As the manager does: its own pid, the worker's parent.
                "CORTEX_MANAGER_PID": str(os.getpid()),
            }
        )
        env.update(transport_env or {})
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, cwd=HERE
        )
        self.frames = queue.Queue()
        self.heartbeats = []
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream):
        while True:
            prefix = stream.read(4)
            if len(prefix) < 4:
                self.frames.put(None if not prefix else ("truncated", prefix))
                return
            (length,) = struct.unpack(">I", prefix)
            body = stream.read(length)
            self.frames.put(prefix + body)

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def unread(self):
        """Bytes written to the worker's stdin that it has not read yet (FIONREAD)."""
        out = fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", out)[0]

    def send_bytewise(self, data, timeout=TIMEOUT):
        """Writes ``data`` one byte at a time, each only once the worker has read
        every earlier byte: each of its reads returns exactly one byte."""
        deadline = time.monotonic() + timeout
        for k in range(len(data)):
            while self.unread():
                if time.monotonic() > deadline:
                    raise AssertionError(f"the worker stopped reading at byte {k} of {len(data)}")
                time.sleep(0.0005)
            self.send(data[k : k + 1])

    def raw(self, timeout=TIMEOUT, skip_heartbeats=True):
        """The next whole frame's bytes (prefix included), or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no frame from the worker within {timeout} s") from None
            if isinstance(item, tuple):
                raise AssertionError(f"worker stream truncated: {item!r}")
            if item is None:
                return None
            message = msgpack.unpackb(item[4:], raw=False)
            if skip_heartbeats and message["type"] == "heartbeat":
                self.heartbeats.append(message)
                continue
            return item

    def recv(self, timeout=TIMEOUT, skip_heartbeats=True):
        item = self.raw(timeout, skip_heartbeats)
        return None if item is None else msgpack.unpackb(item[4:], raw=False)

    def handshake(self, **kwargs):
        self.send(hello(**kwargs))
        ready = self.recv()
        assert ready["type"] == "ready", ready
        return ready

    def wait(self, timeout=TIMEOUT):
        return self.proc.wait(timeout)

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.stderr.close()


class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.w = WorkerProcess()
        self.addCleanup(self.w.close)

    def test_doc_has_every_example(self):
        for name in ("hello", "task", "cancel", "shutdown"):
            self.assertIn(("to-worker", name), EXAMPLES)
        for name in ("ready", "result", "error", "heartbeat", "log"):
            self.assertIn(("from-worker", name), EXAMPLES)

    def test_handshake_with_the_documented_hello(self):
        self.w.send(EXAMPLES[("to-worker", "hello")])
        ready = self.w.recv()
        self.assertEqual(ready["type"], "ready")
        self.assertEqual(ready["version"], 1)
        self.assertEqual(ready["pid"], self.w.proc.pid)
        self.assertEqual(ready["task_types"], ["crash", "echo", "fail", "noisy", "sleep"])

    def test_version_mismatch_ends_the_worker(self):
        self.w.send(hello(version=99))
        self.assertIsNone(self.w.recv())
        self.assertNotEqual(self.w.wait(), 0)
        self.assertIn("version", self.w.stderr_text())

    def test_documented_task_gets_the_documented_result(self):
        self.w.handshake()
        self.w.send(EXAMPLES[("to-worker", "task")])
        self.assertEqual(self.w.raw(), EXAMPLES[("from-worker", "result")])

    def test_echo_round_trip_ignoring_unknown_keys(self):
        self.w.handshake()
        payload = {"text": "héllo", "blob": bytes(range(256)) * 40, "n": [1, -2, 3.5, None, True]}
        self.w.send(task(9, "echo", payload, from_the_future="ignored"))
        reply = self.w.recv()
        self.assertEqual(reply["type"], "result")
        self.assertEqual(reply["id"], 9)
        self.assertIsInstance(reply["payload"], bytes)
        self.assertEqual(msgpack.unpackb(reply["payload"], raw=False), payload)

    def test_a_payload_map_with_integer_keys_reaches_the_handler(self):
        self.w.handshake()
        payload = {1: "one", -2: ["minus two"], "three": {4: None}}
        self.w.send(task(13, "echo", payload))
        reply = self.w.recv()
        self.assertEqual((reply["type"], reply["id"]), ("result", 13), reply)
        self.assertEqual(msgpack.unpackb(reply["payload"], raw=False, strict_map_key=False), payload)

    def test_a_manager_message_without_a_key_it_needs_is_a_broken_link(self):
        cases = {
            "shutdown without graceful": {"type": "shutdown"},
            "shutdown with a graceful that is no bool": {"type": "shutdown", "graceful": 1},
            "task without id": {"type": "task", "task_type": "echo", "payload": b"", "attempt": 1, "timeout_ms": 0},
            "task with a text id": {"type": "task", "id": "7", "task_type": "echo", "payload": b"", "attempt": 1, "timeout_ms": 0},
            "task with a negative id": {"type": "task", "id": -1, "task_type": "echo", "payload": b"", "attempt": 1, "timeout_ms": 0},
            "task without timeout_ms": {"type": "task", "id": 7, "task_type": "echo", "payload": b"", "attempt": 1},
            "task with a text payload": {"type": "task", "id": 7, "task_type": "echo", "payload": "", "attempt": 1, "timeout_ms": 0},
            "task with an attempt past uint32": {"type": "task", "id": 7, "task_type": "echo", "payload": b"", "attempt": 2**32, "timeout_ms": 0},
            "cancel without id": {"type": "cancel"},
        }
        for name, message in cases.items():
            with self.subTest(name):
                w = WorkerProcess()
                self.addCleanup(w.close)
                w.handshake()
                w.send(frame(message))
                self.assertIsNone(w.recv(), "nothing answered")
                self.assertEqual(w.wait(), 2)
                self.assertRegex(w.stderr_text(), rf"malformed {message['type']} message: `\w+` must be a")

    def test_handler_error_is_retryable_then_succeeds(self):
        self.w.handshake()
        self.w.send(task(1, "fail", {"times": 1}, attempt=1))
        error = self.w.recv()
        self.assertEqual((error["type"], error["id"], error["kind"], error["retryable"]), ("error", 1, "handler", True))
        self.assertIn("failing attempt 1 of 1", error["message"])
        self.w.send(task(1, "fail", {"times": 1}, attempt=2))
        result = self.w.recv()
        self.assertEqual(result["type"], "result")
        self.assertEqual(msgpack.unpackb(result["payload"]), {"attempt": 2})

    def test_fatal_error_is_not_retryable(self):
        self.w.handshake()
        self.w.send(task(2, "fail", {"times": 5, "fatal": True}))
        error = self.w.recv()
        self.assertEqual((error["kind"], error["retryable"]), ("handler", False))

    def test_unknown_type_and_bad_input(self):
        self.w.handshake()
        self.w.send(task(3, "nope", {}))
        error = self.w.recv()
        self.assertEqual((error["id"], error["kind"], error["retryable"]), (3, "unknown_type", False))
        bad = {"type": "task", "id": 4, "task_type": "echo", "payload": b"\xc1", "attempt": 1, "timeout_ms": 0}
        self.w.send(frame(bad))
        error = self.w.recv()
        self.assertEqual((error["id"], error["kind"], error["retryable"]), (4, "bad_input", False))

    def test_crash_exits_with_the_code(self):
        self.w.handshake()
        self.w.send(task(5, "crash", {"code": 7}))
        self.assertEqual(self.w.wait(), 7)
        self.assertIsNone(self.w.recv())

    def test_cancel_answers_cancelled(self):
        self.w.handshake()
        self.w.send(task(42, "sleep", {"ms": 60_000}))
        self.w.send(task(43, "echo", "first"))
        # Tasks run concurrently: the echo overtakes the sleep.
        self.assertEqual(self.w.recv()["id"], 43)
        started = time.monotonic()
        self.w.send(EXAMPLES[("to-worker", "cancel")])
        error = self.w.recv()
        self.assertEqual((error["type"], error["id"], error["kind"], error["retryable"]), ("error", 42, "cancelled", False))
        self.assertLess(time.monotonic() - started, 5)
        # A cancel for a task that is not in flight is ignored.
        self.w.send(frame({"type": "cancel", "id": 42}))
        self.w.send(task(44, "echo", "still fine"))
        self.assertEqual(self.w.recv()["id"], 44)

    def test_print_in_a_handler_does_not_corrupt_the_stream(self):
        self.w.handshake()
        self.w.send(task(6, "noisy", "payload"))
        reply = self.w.recv()
        self.assertEqual((reply["type"], reply["id"]), ("result", 6))
        self.w.send(task(7, "echo", "after"))
        self.assertEqual(msgpack.unpackb(self.w.recv()["payload"]), "after")
        self.w.send(EXAMPLES[("to-worker", "shutdown")])
        self.assertEqual(self.w.wait(), 0)
        err = self.w.stderr_text()
        for how in ("print()", "sys.stdout.write", "os.write(1)"):
            self.assertIn(f"noisy handler: {how}", err)

    def test_graceful_shutdown_finishes_in_flight(self):
        self.w.handshake()
        self.w.send(task(8, "sleep", {"ms": 300}))
        self.w.send(frame({"type": "shutdown", "graceful": True}))
        result = self.w.recv()
        self.assertEqual((result["type"], result["id"]), ("result", 8))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 0)

    def test_immediate_shutdown_does_not_wait(self):
        self.w.handshake()
        self.w.send(task(8, "sleep", {"ms": 60_000}))
        self.w.send(frame({"type": "shutdown", "graceful": False}))
        self.assertEqual(self.w.wait(timeout=5), 0)

    def test_a_task_after_a_graceful_shutdown_is_refused_while_the_earlier_one_runs(self):
        self.w.handshake()
        # Task 1 runs until it is cancelled: the late tasks surely come while it runs.
        self.w.send(task(1, "sleep", {"ms": 600_000}))
        # Task 2 comes in the same write as the shutdown, task 3 in a later one;
        # the input stays open, so the drain ends while the worker waits to read.
        self.w.send(frame({"type": "shutdown", "graceful": True}) + task(2, "echo", "late"))
        refused = {"type": "error", "kind": "shutting_down", "message": "the worker is shutting down", "retryable": True}
        self.assertEqual(self.w.recv(), dict(refused, id=2))
        self.w.send(task(3, "noisy", "late too"))
        self.assertEqual(self.w.recv(), dict(refused, id=3))
        self.w.send(frame({"type": "cancel", "id": 1}))
        ended = self.w.recv()
        self.assertEqual((ended["type"], ended["id"], ended.get("kind")), ("error", 1, "cancelled"))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 0)
        self.assertNotIn("noisy handler", self.w.stderr_text(), "a refused task does not run")

    def test_end_of_input_after_a_graceful_shutdown_does_not_cut_the_drain_short(self):
        self.w.handshake()
        self.w.send(task(1, "sleep", {"ms": 1000}) + task(2, "sleep", {"ms": 60_000}))
        # A cancel after the shutdown still applies; then the input ends while
        # task 1 runs.
        self.w.send(frame({"type": "shutdown", "graceful": True}) + frame({"type": "cancel", "id": 2}))
        self.w.proc.stdin.close()
        cancelled = self.w.recv()
        self.assertEqual((cancelled["type"], cancelled["id"], cancelled.get("kind"), cancelled.get("retryable")), ("error", 2, "cancelled", False))
        result = self.w.recv()
        self.assertEqual((result["type"], result["id"], msgpack.unpackb(result["payload"])), ("result", 1, {"slept_ms": 1000}))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 0)

    def test_input_ending_inside_a_frame_exits_2_and_says_why(self):
        cases = {
            "in a length prefix": (hello()[:3], b""),
            "in a body": (b"", task(1, "echo", "cut")[:7]),
            "during a drain": (b"", task(1, "sleep", {"ms": 60_000}) + frame({"type": "shutdown", "graceful": True}) + b"\0\0"),
        }
        for name, (before_ready, after_ready) in cases.items():
            with self.subTest(name):
                w = WorkerProcess()
                self.addCleanup(w.close)
                if after_ready:
                    w.handshake()
                w.send(before_ready + after_ready)
                w.proc.stdin.close()
                self.assertIsNone(w.recv())
                self.assertEqual(w.wait(), 2)
                self.assertRegex(w.stderr_text(), r"stream ended \d+ bytes into a frame")

    def test_eof_exits_zero_promptly(self):
        self.w.handshake()
        self.w.send(task(10, "sleep", {"ms": 60_000}))
        self.w.proc.stdin.close()
        self.assertEqual(self.w.wait(timeout=5), 0)

    def test_eof_before_hello_exits_zero(self):
        self.w.proc.stdin.close()
        self.assertEqual(self.w.wait(), 0)

    def test_heartbeats_come_while_a_handler_is_busy(self):
        self.w.handshake(heartbeat_ms=50)
        self.w.send(task(11, "sleep", {"ms": 400}))
        result = self.w.recv()
        self.assertEqual(result["id"], 11)
        self.assertGreaterEqual(len(self.w.heartbeats), 3, self.w.heartbeats)
        beat = self.w.heartbeats[0]
        self.assertEqual(set(beat), {"type", "rss_bytes", "cpu_ms", "tasks_done", "in_flight"})
        self.assertEqual((beat["in_flight"], beat["tasks_done"]), (1, 0))
        self.assertGreater(beat["rss_bytes"], 0)
        later = self.w.recv(skip_heartbeats=False)
        self.assertEqual((later["type"], later["tasks_done"], later["in_flight"]), ("heartbeat", 1, 0))

    def test_heartbeat_ms_0_sends_no_heartbeats(self):
        self.w.handshake(heartbeat_ms=0)
        # The task runs 2.5 s: a period of 1 s (what 0 used to mean) would put
        # two heartbeats before its result.
        self.w.send(task(12, "sleep", {"ms": 2500}))
        first = self.w.recv(skip_heartbeats=False)
        self.assertEqual((first["type"], first.get("id")), ("result", 12), "no heartbeat before the result")
        self.w.send(frame({"type": "shutdown", "graceful": True}))
        self.assertIsNone(self.w.recv(skip_heartbeats=False))
        self.assertEqual(self.w.wait(), 0)


class ConcurrencyTest(unittest.TestCase):
    """``hello.concurrency``: how many tasks run at once; the rest wait in arrival order."""

    def setUp(self):
        self.w = WorkerProcess()
        self.addCleanup(self.w.close)

    def test_with_concurrency_one_a_second_task_waits_and_its_cancel_is_answered_at_once(self):
        self.w.handshake(concurrency=1)
        self.w.send(task(1, "sleep", {"ms": 60_000}) + task(2, "echo", "waits") + task(3, "echo", "third"))
        # Task 2 cannot have run (it would have answered with a result): it waits.
        self.w.send(frame({"type": "cancel", "id": 2}))
        error = self.w.recv()
        self.assertEqual((error["type"], error["id"], error["kind"], error["retryable"]), ("error", 2, "cancelled", False))
        self.assertIn("before it started", error["message"])
        # Task 3 starts only when task 1 ends.
        self.w.send(frame({"type": "cancel", "id": 1}))
        first = self.w.recv()
        self.assertEqual((first["type"], first["id"], first["kind"]), ("error", 1, "cancelled"))
        third = self.w.recv()
        self.assertEqual((third["type"], third["id"]), ("result", 3))
        self.assertEqual(msgpack.unpackb(third["payload"]), "third")

    def test_with_concurrency_two_two_tasks_run_and_the_third_waits(self):
        self.w.handshake(concurrency=2)
        self.w.send(task(1, "sleep", {"ms": 60_000}) + task(2, "echo", "runs beside task 1"))
        self.assertEqual(self.w.recv()["id"], 2)
        self.w.send(task(3, "sleep", {"ms": 60_000}) + task(4, "echo", "waits"))
        self.w.send(frame({"type": "cancel", "id": 4}))
        error = self.w.recv()
        self.assertEqual((error["id"], error["kind"], error["retryable"]), (4, "cancelled", False))
        self.assertIn("before it started", error["message"])
        for task_id in (1, 3):
            self.w.send(frame({"type": "cancel", "id": task_id}))
            self.assertEqual(self.w.recv()["id"], task_id)

    def test_waiting_tasks_start_in_arrival_order(self):
        self.w.handshake(concurrency=1)
        batch = task(1, "sleep", {"ms": 200}) + b"".join(task(i, "echo", i) for i in range(2, 30))
        self.w.send(batch)
        self.assertEqual([self.w.recv()["id"] for _ in range(29)], list(range(1, 30)))

    def test_graceful_shutdown_runs_the_waiting_tasks_too(self):
        self.w.handshake(concurrency=1)
        self.w.send(task(1, "sleep", {"ms": 200}) + task(2, "echo", "after") + frame({"type": "shutdown", "graceful": True}))
        self.assertEqual([(m["type"], m["id"]) for m in (self.w.recv(), self.w.recv())], [("result", 1), ("result", 2)])
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 0)

    def test_a_drain_runs_the_waiting_tasks_refuses_late_ones_and_outlasts_end_of_input(self):
        self.w.handshake(concurrency=1)
        # Task 2 waits for task 1's slot; task 3 comes after the shutdown.
        self.w.send(
            task(1, "sleep", {"ms": 1000})
            + task(2, "echo", "waited")
            + frame({"type": "shutdown", "graceful": True})
            + task(3, "echo", "late")
        )
        self.w.proc.stdin.close()
        refused = self.w.recv()
        self.assertEqual((refused["type"], refused["id"], refused.get("kind"), refused.get("retryable")), ("error", 3, "shutting_down", True))
        replies = [self.w.recv(), self.w.recv()]
        self.assertEqual([(m["type"], m["id"], msgpack.unpackb(m["payload"])) for m in replies], [("result", 1, {"slept_ms": 1000}), ("result", 2, "waited")])
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 0)

    def test_a_hello_without_heartbeat_ms_or_max_frame_ends_the_worker_before_ready(self):
        for key, value in (("heartbeat_ms", None), ("heartbeat_ms", "1000"), ("max_frame", None), ("max_frame", 1 << 32)):
            with self.subTest(key=key, value=value):
                w = WorkerProcess()
                self.addCleanup(w.close)
                message = {"type": "hello", "version": 1, "worker_id": "worker-7", "heartbeat_ms": 1000, "max_frame": 1 << 24}
                if value is None:
                    del message[key]
                else:
                    message[key] = value
                w.send(frame(message))
                self.assertEqual(w.wait(), 2)
                self.assertIsNone(w.recv(), "nothing sent, no ready")
                self.assertIn(f"malformed hello message: `{key}` must be a", w.stderr_text())

    def test_a_bad_concurrency_ends_the_worker_and_says_why(self):
        self.w.send(hello(concurrency=0))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 2)
        self.assertIn("concurrency", self.w.stderr_text())

    def test_another_version_is_named_even_when_other_keys_changed(self):
        for extra in ({}, {"heartbeat_ms": "x"}, {"max_frame": [1]}):
            with self.subTest(extra=extra):
                w = WorkerProcess()
                self.addCleanup(w.close)
                w.send(frame({"type": "hello", "version": 2, **extra}))
                self.assertIsNone(w.recv())
                self.assertEqual(w.wait(), 2)
                self.assertIn("protocol version 2", w.stderr_text())

    def test_a_first_message_that_is_no_hello_is_named_by_its_type(self):
        self.w.send(frame({"type": "task", "id": 1}))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 2)
        self.assertIn("expected hello first, got 'task'", self.w.stderr_text())

    def test_a_version_of_another_type_is_another_version(self):
        self.w.send(hello(version=True))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 2)
        self.assertIn("protocol version True", self.w.stderr_text())

    def test_a_nil_concurrency_ends_the_worker_as_a_malformed_one(self):
        self.w.send(hello(concurrency=None))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 2)
        self.assertIn("got None", self.w.stderr_text())

    def test_a_concurrency_past_uint32_ends_the_worker_as_a_malformed_one(self):
        self.w.send(hello(concurrency=2**32))
        self.assertIsNone(self.w.recv())
        self.assertEqual(self.w.wait(), 2)
        self.assertIn("4294967295", self.w.stderr_text())


class _Recorder(io.RawIOBase):
    """A writer that keeps every write apart."""

    def __init__(self):
        self.writes = []

    def writable(self):
        return True

    def write(self, data):
        self.writes.append(bytes(data))
        return len(data)


def _split(data):
    out = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        out.append(msgpack.unpackb(data[4 : 4 + length], raw=False))
        data = data[4 + length :]
    return out


class BatchTest(unittest.TestCase):
    """In process: what one read brings in runs in order; replies are batched, or
    (``hold_replies=0``) each written before the next task starts."""

    def test_replies_of_inline_tasks_read_together_leave_in_one_write(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        worker = cortex_worker.Worker(hold_replies=60)
        writer = _Recorder()

        @worker.handler("echo", inline=True)
        def echo(ctx, payload):
            return payload

        tasks = b"".join(task(i, "echo", i) for i in range(1, 26))
        reader = io.BytesIO(hello(concurrency=1) + tasks)
        self.assertEqual(worker.run(cortex_worker.Link(reader, writer)), 0)
        ready = _split(writer.writes[0])
        self.assertEqual([m["type"] for m in ready], ["ready"])
        self.assertIs(ready[0]["batches_replies"], True)
        replies = [[m["id"] for m in _split(data)] for data in writer.writes[1:]]
        self.assertEqual(replies, [list(range(1, 26))], "one write for the read's replies")

    def test_replies_held_past_the_hold_leave_before_the_next_task_starts(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        worker = cortex_worker.Worker(hold_replies=0.005)
        writer = _Recorder()
        written_at_start = {}

        def written_results():
            return [m["id"] for data in writer.writes for m in _split(data) if m["type"] == "result"]

        @worker.handler("echo", inline=True)
        def echo(ctx, payload):
            written_at_start[ctx.id] = written_results()
            if ctx.id == 2:
                time.sleep(0.02)  # past the hold: replies 1 and 2 leave before task 3
            return payload

        tasks = b"".join(task(i, "echo", i) for i in range(1, 4))
        reader = io.BytesIO(hello(concurrency=1) + tasks)
        self.assertEqual(worker.run(cortex_worker.Link(reader, writer)), 0)
        self.assertEqual(written_at_start[3], [1, 2])
        self.assertEqual(written_results(), [1, 2, 3])

    def test_each_reply_is_written_before_the_next_task_starts(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        worker = cortex_worker.Worker(hold_replies=0)
        ran_on = []
        written_at_start = {}
        writer = _Recorder()

        def written_results():
            return [m["id"] for data in writer.writes for m in _split(data) if m["type"] == "result"]

        @worker.handler("echo", inline=True)
        def echo(ctx, payload):
            ran_on.append(threading.current_thread())
            written_at_start[ctx.id] = written_results()
            return payload

        @worker.handler("slow_echo")
        def slow_echo(ctx, payload):
            written_at_start[ctx.id] = written_results()
            return payload

        tasks = b"".join(task(i, "echo", i) for i in range(1, 26))
        tasks += b"".join(task(i, "slow_echo", i) for i in range(26, 51))
        reader = io.BytesIO(hello(concurrency=1) + tasks + frame({"type": "shutdown", "graceful": True}))
        self.assertEqual(worker.run(cortex_worker.Link(reader, writer)), 0)
        self.assertEqual([m["type"] for m in _split(writer.writes[0])], ["ready"])
        self.assertEqual(written_results(), list(range(1, 51)))
        for i in range(1, 51):
            self.assertEqual(written_at_start[i], list(range(1, i)), f"task {i} started after every earlier reply was written")
        self.assertEqual(set(ran_on), {threading.current_thread()}, "inline handlers ran on the reading thread")


class _LateRegistration(io.RawIOBase):
    """A reader that hands out ``first``, then calls ``between()`` (the worker has
    answered ``ready`` by then) and hands out ``second``."""

    def __init__(self, first, second, between):
        self.pieces = [first, second]
        self.between = between

    def readable(self):
        return True

    def readinto(self, buf):
        if not self.pieces:
            return 0
        if len(self.pieces) == 1:
            self.between()
        data = self.pieces.pop(0)
        buf[: len(data)] = data
        return len(data)


class BatchesRepliesTest(unittest.TestCase):
    """In process: ``ready`` says ``batches_replies`` only when replies can be held,
    and replies are never held when it did not say so."""

    def setUp(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        self.cw = cortex_worker

    def ready_of(self, worker):
        writer = _Recorder()
        self.assertEqual(worker.run(self.cw.Link(io.BytesIO(hello()), writer)), 0)
        (ready,) = _split(writer.writes[0])
        self.assertEqual(ready["type"], "ready")
        return ready.get("batches_replies", False)

    def test_batches_replies_only_with_an_inline_handler_and_a_hold(self):
        for hold, inline, expected in [
            (None, False, False),  # the defaults: nothing runs inline, nothing is held
            (0.001, False, False),
            (60, False, False),
            (None, True, True),
            (0, True, False),
        ]:
            with self.subTest(hold=hold, inline=inline):
                worker = self.cw.Worker() if hold is None else self.cw.Worker(hold_replies=hold)
                worker.handler("echo", inline=inline)(lambda ctx, payload: payload)
                self.assertIs(self.ready_of(worker), expected)

    def test_an_inline_handler_registered_after_ready_does_not_hold_replies(self):
        worker = self.cw.Worker(hold_replies=60)
        worker.handler("slow_echo")(lambda ctx, payload: payload)
        writer = _Recorder()
        written_at_start = {}

        def written_results():
            return [m["id"] for data in writer.writes for m in _split(data) if m["type"] == "result"]

        def echo(ctx, payload):
            written_at_start[ctx.id] = written_results()
            return payload

        tasks = b"".join(task(i, "echo", i) for i in range(1, 6))
        reader = _LateRegistration(hello(concurrency=1), tasks, lambda: worker.handler("echo", inline=True)(echo))
        self.assertEqual(worker.run(self.cw.Link(reader, writer)), 0)
        self.assertIs(_split(writer.writes[0])[0]["batches_replies"], False)
        self.assertEqual(written_results(), [1, 2, 3, 4, 5])
        for i in range(1, 6):
            self.assertEqual(written_at_start[i], list(range(1, i)), f"task {i} started after every earlier reply was written")


class HandlerErrorTest(unittest.TestCase):
    """In process: whatever a handler raises, its task is answered once and the
    worker goes on (on a task thread and inline alike)."""

    def test_system_exit_an_interrupt_and_undecodable_text_are_answered_and_the_next_task_runs(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        for inline in (False, True):
            worker = cortex_worker.Worker(hold_replies=0)
            writer = _Recorder()

            @worker.handler("exits", inline=inline)
            def exits(ctx, payload):
                sys.exit(3)

            @worker.handler("bad_text", inline=inline)
            def bad_text(ctx, payload):
                raise RuntimeError("cannot read " + os.fsdecode(b"\xff.bin"))

            class Unprintable(Exception):
                def __str__(self):
                    raise ValueError("no text")

            @worker.handler("unprintable", inline=inline)
            def unprintable(ctx, payload):
                raise Unprintable()

            @worker.handler("interrupted", inline=inline)
            def interrupted(ctx, payload):
                raise KeyboardInterrupt

            @worker.handler("echo", inline=inline)
            def echo(ctx, payload):
                return payload

            tasks = (
                task(1, "exits")
                + task(2, "bad_text")
                + task(4, "unprintable")
                + task(5, "interrupted")
                + task(3, "echo", "after")
            )
            reader = io.BytesIO(hello(concurrency=1) + tasks + frame({"type": "shutdown", "graceful": True}))
            self.assertEqual(worker.run(cortex_worker.Link(reader, writer)), 0)
            replies = {m["id"]: m for data in writer.writes for m in _split(data) if m["type"] in ("result", "error")}
            self.assertEqual(sorted(replies), [1, 2, 3, 4, 5], f"inline={inline}")
            self.assertEqual(replies[5]["kind"], "handler")
            self.assertIn("KeyboardInterrupt", replies[5]["message"])
            self.assertEqual((replies[4]["kind"], replies[4]["message"]), ("handler", "Unprintable"))
            self.assertEqual(replies[1]["kind"], "handler")
            self.assertIn("SystemExit", replies[1]["message"])
            self.assertEqual(replies[2]["kind"], "handler")
            self.assertIn("\\udcff", replies[2]["message"])
            self.assertEqual(msgpack.unpackb(replies[3]["payload"], raw=False), "after")


class HandlerValuesTest(unittest.TestCase):
    """In process: a ``TaskError`` whose ``kind`` or ``retryable`` the handler set
    to another type is answered with a string and a boolean (the manager kills a
    worker that sends other types)."""

    def test_a_task_errors_kind_and_retryable_go_out_as_a_string_and_a_boolean(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        worker = cortex_worker.Worker(hold_replies=0)
        writer = _Recorder()

        @worker.handler("odd")
        def odd(ctx, payload):
            raise cortex_worker.TaskError("upstream said no", kind=7, retryable="")

        @worker.handler("odd_class")
        def odd_class(ctx, payload):
            error = cortex_worker.FatalError("no")
            error.retryable = 1
            raise error

        @worker.handler("none_later")
        def none_later(ctx, payload):
            error = cortex_worker.FatalError("no")
            error.kind, error.retryable = None, None
            raise error

        tasks = task(1, "odd") + task(2, "odd_class") + task(3, "none_later")
        reader = io.BytesIO(hello(concurrency=1) + tasks + frame({"type": "shutdown", "graceful": True}))
        self.assertEqual(worker.run(cortex_worker.Link(reader, writer)), 0)
        replies = {m["id"]: m for data in writer.writes for m in _split(data) if m["type"] == "error"}
        self.assertEqual((replies[1]["kind"], replies[1]["retryable"]), ("7", False))
        self.assertEqual((replies[2]["kind"], replies[2]["retryable"]), ("handler", True))
        self.assertEqual((replies[3]["kind"], replies[3]["retryable"]), ("handler", False), "the class's defaults")
        for reply in replies.values():
            self.assertIs(type(reply["retryable"]), bool)


class ImportTest(unittest.TestCase):
    """A worker script's own prints before ``Worker.run`` (after its import of
    this module, or before it while ``sys.stdout`` is buffered) land on standard
    error, never on the protocol's stream ahead of ``ready``."""

    def run_script(self, source, **env):
        script = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        self.addCleanup(os.unlink, script.name)
        script.write(textwrap.dedent(source))
        script.close()
        w = WorkerProcess(script=script.name, transport_env={"PYTHONPATH": HERE, **env})
        self.addCleanup(w.close)
        ready = w.handshake()
        self.assertEqual(ready["task_types"], ["echo"])
        w.send(task(1, "echo", "after the banner"))
        self.assertEqual(msgpack.unpackb(w.recv()["payload"]), "after the banner")
        w.send(frame({"type": "shutdown", "graceful": True}))
        self.assertEqual(w.wait(), 0)
        return w.stderr_text()

    SCRIPT = """
        {before}
        from cortex_worker import Worker
        print("loading the model after the import")
        worker = Worker()
        worker.handler("echo")(lambda ctx, payload: payload)
        worker.main()
    """

    def test_a_buffered_print_before_the_import_goes_to_stderr(self):
        # Buffered: the environment of this test may ask for unbuffered output.
        err = self.run_script(self.SCRIPT.format(before='print("banner before the import")'), PYTHONUNBUFFERED="")
        self.assertIn("banner before the import", err)
        self.assertIn("loading the model after the import", err)

    def test_an_unbuffered_print_after_the_import_goes_to_stderr(self):
        err = self.run_script(self.SCRIPT.format(before=""), PYTHONUNBUFFERED="1")
        self.assertIn("loading the model after the import", err)

    def test_a_second_copy_of_the_module_keeps_the_protocol_on_stdout(self):
        # A reload runs the module's code again, descriptor 1 being stderr by then.
        err = self.run_script(
            self.SCRIPT.format(before="import importlib, cortex_worker; importlib.reload(cortex_worker)"),
            PYTHONUNBUFFERED="1",
        )
        self.assertIn("loading the model after the import", err)

    def test_a_process_the_worker_starts_keeps_its_stdout(self):
        # It inherits the CORTEX_* environment; its parent is the worker.
        source = """
            import subprocess, sys
            from cortex_worker import Worker
            worker = Worker()
            worker.handler("echo")(lambda ctx, payload: payload)
            child = "import cortex_worker; print('from the child')"
            worker.handler("child")(
                lambda ctx, payload: subprocess.run(
                    [sys.executable, "-c", child], capture_output=True, text=True, check=True
                ).stdout
            )
            worker.main()
        """
        script = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        self.addCleanup(os.unlink, script.name)
        script.write(textwrap.dedent(source))
        script.close()
        w = WorkerProcess(script=script.name, transport_env={"PYTHONPATH": HERE})
        self.addCleanup(w.close)
        w.handshake()
        w.send(task(1, "child"))
        self.assertEqual(msgpack.unpackb(w.recv()["payload"]), "from the child\n")


class _Gated(io.RawIOBase):
    """A reader that hands out ``first``, then, once ``ready`` is set (bounded
    by ``TIMEOUT``), ``second``, then end of input."""

    def __init__(self, first, second, ready):
        self.pieces = [first, second]
        self.ready = ready

    def readable(self):
        return True

    def readinto(self, buf):
        if not self.pieces:
            return 0
        if len(self.pieces) == 1 and not self.ready.wait(TIMEOUT):
            raise AssertionError("the handlers did not start")
        data = self.pieces.pop(0)
        buf[: len(data)] = data
        return len(data)


class CancelTest(unittest.TestCase):
    """In process: what a cancelled task's handler raises."""

    def test_a_task_error_raised_after_the_cancel_is_answered_cancelled(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        worker = cortex_worker.Worker()
        started = threading.Semaphore(0)
        both = threading.Event()
        errors = {
            "retryable": cortex_worker.RetryableError("gave up after the cancel"),
            "custom": cortex_worker.TaskError("quota gone", kind="quota", retryable=True),
        }

        def gives_up(ctx, payload):
            started.release()
            ctx.wait_cancelled(TIMEOUT)
            raise errors[ctx.task_type]

        for task_type in errors:
            worker.handler(task_type)(gives_up)

        def wait_for_both():
            if all(started.acquire(timeout=TIMEOUT) for _ in errors):
                both.set()

        threading.Thread(target=wait_for_both, daemon=True).start()
        first = hello() + task(1, "retryable") + task(2, "custom")
        # The cancels come once both handlers run: they cancel running tasks.
        second = frame({"type": "cancel", "id": 1}) + frame({"type": "cancel", "id": 2}) + frame({"type": "shutdown", "graceful": True})
        writer = _Recorder()
        self.assertEqual(worker.run(cortex_worker.Link(_Gated(first, second, both), writer)), 0)
        replies = {m["id"]: m for data in writer.writes for m in _split(data) if m["type"] == "error"}
        self.assertEqual(
            replies[1],
            {"type": "error", "id": 1, "kind": "cancelled", "message": "cancelled (RetryableError: gave up after the cancel)", "retryable": False},
        )
        self.assertEqual(
            replies[2], {"type": "error", "id": 2, "kind": "cancelled", "message": "cancelled (TaskError: quota gone)", "retryable": False}
        )


class ReplyFrameTest(unittest.TestCase):
    """Result frames framed by hand, the per-thread encoder, writes on a descriptor."""

    def setUp(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        self.cw = cortex_worker

    def test_a_hand_framed_result_is_the_encoded_map_byte_for_byte(self):
        link = self.cw.Link(io.BytesIO(), _Recorder())
        ids = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -33, True]
        for task_id in ids:
            for size in [0, 1, 127, 128, 255, 256, 65535, 65536, 70000]:
                payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
                with self.subTest(task_id=task_id, size=size):
                    expected = link.frame({"type": "result", "id": task_id, "payload": payload})
                    self.assertEqual(link.frame_result(task_id, payload), expected)

    def test_a_hand_framed_result_over_max_frame_is_refused_like_frame(self):
        link = self.cw.Link(io.BytesIO(), _Recorder(), max_frame=100)
        with self.assertRaises(self.cw.ProtocolError) as by_hand:
            link.frame_result(7, b"x" * 90)
        with self.assertRaises(self.cw.ProtocolError) as encoded:
            link.frame({"type": "result", "id": 7, "payload": b"x" * 90})
        self.assertEqual(str(by_hand.exception), str(encoded.exception))

    def run_worker(self, worker, frames, max_frame=16 * 1024 * 1024):
        writer = _Recorder()
        data = hello(max_frame=max_frame) + b"".join(frames) + frame({"type": "shutdown", "graceful": True})
        self.assertEqual(worker.run(self.cw.Link(io.BytesIO(data), writer)), 0)
        replies = [m for data in writer.writes for m in _split(data) if m["type"] in ("result", "error")]
        return {m["id"]: m for m in replies}

    def test_results_too_large_or_not_encodable_leave_the_next_result_whole(self):
        for inline in (True, False):
            with self.subTest(inline=inline):
                worker = self.cw.Worker()
                worker.handler("echo", inline=inline)(lambda ctx, payload: payload)
                worker.handler("big", inline=inline)(lambda ctx, payload: "x" * 500)
                worker.handler("odd", inline=inline)(lambda ctx, payload: [1, 2, object()])
                tasks = [task(1, "big"), task(2, "echo", [3, 4]), task(3, "odd"), task(4, "echo", {"k": "v"})]
                replies = self.run_worker(worker, tasks, max_frame=300)
                self.assertEqual(replies[1]["kind"], "result_too_large", replies[1])
                self.assertFalse(replies[1]["retryable"])
                self.assertEqual(msgpack.unpackb(replies[2]["payload"]), [3, 4])
                self.assertEqual(replies[3]["kind"], "handler", replies[3])
                self.assertIn("not MessagePack-serialisable", replies[3]["message"])
                self.assertEqual(msgpack.unpackb(replies[4]["payload"]), {"k": "v"}, "the encoder kept nothing of the failed result")

    def test_an_error_too_large_keeps_its_kind_and_retryable_with_a_shortened_message(self):
        for inline in (True, False):
            with self.subTest(inline=inline):
                worker = self.cw.Worker()
                writer = _Recorder()

                @worker.handler("retry", inline=inline)
                def retry(ctx, payload):
                    raise self.cw.RetryableError("é" * 1000)  # two bytes a character: cut inside one

                @worker.handler("custom", inline=inline)
                def custom(ctx, payload):
                    raise self.cw.TaskError("x" * 5000, kind="quota", retryable=False)

                @worker.handler("huge_kind", inline=inline)
                def huge_kind(ctx, payload):
                    raise self.cw.TaskError("no room", kind="k" * 400, retryable=False)

                worker.handler("big", inline=inline)(lambda ctx, payload: "x" * 500)
                tasks = task(1, "retry") + task(2, "custom") + task(3, "big") + task(4, "huge_kind")
                data = hello(max_frame=300) + tasks + frame({"type": "shutdown", "graceful": True})
                self.assertEqual(worker.run(self.cw.Link(io.BytesIO(data), writer)), 0)
                frames = []
                for data in writer.writes:
                    while data:
                        (length,) = struct.unpack(">I", data[:4])
                        frames.append(data[4 : 4 + length])
                        data = data[4 + length :]
                for body in frames:
                    self.assertLessEqual(len(body), 300)
                replies = {m["id"]: m for m in map(msgpack.unpackb, frames) if m["type"] == "error"}
                self.assertEqual((replies[1]["kind"], replies[1]["retryable"]), ("handler", True), replies[1])
                self.assertTrue(replies[1]["message"].startswith("RetryableError: éé"), replies[1])
                self.assertIn("cut to fit a frame of 300 bytes", replies[1]["message"])
                self.assertEqual((replies[2]["kind"], replies[2]["retryable"]), ("quota", False), replies[2])
                self.assertTrue(replies[2]["message"].startswith("TaskError: xxx"), replies[2])
                self.assertEqual((replies[3]["kind"], replies[3]["retryable"]), ("result_too_large", False), replies[3])
                # A kind too large for the frame alone: kind `handler`, the same hint.
                self.assertEqual(
                    replies[4],
                    {"type": "error", "id": 4, "kind": "handler", "message": "the error reply does not fit in a frame", "retryable": False},
                )

    def test_an_encoder_lets_go_of_the_buffer_a_large_result_grew(self):
        encoder = self.cw._Encoder()
        small = encoder._packer
        self.assertEqual(encoder.encode([1, "a"]), msgpack.packb([1, "a"]))
        self.assertIs(encoder._packer, small, "small results reuse the packer")
        big = b"x" * (encoder.KEEP + 1)
        self.assertEqual(encoder.encode(big), msgpack.packb(big))
        self.assertIsNot(encoder._packer, small, "the packer that grew for a large result is dropped")
        self.assertEqual(encoder.encode({"k": 2}), msgpack.packb({"k": 2}))

    def test_a_writer_with_a_descriptor_gets_every_frame_whole_and_in_order(self):
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb")
        self.addCleanup(reader.close)
        writer = os.fdopen(write_fd, "wb")
        self.addCleanup(writer.close)
        writer.write(b"buffered before the link")  # flushed when the link opens, not lost
        link = self.cw.Link(io.BytesIO(), writer)
        frames = [link.frame_result(i, bytes([i % 256]) * (i * 997)) for i in range(1, 100)]  # ~5 MB: the pipe fills
        got = []
        drain = threading.Thread(target=lambda: got.append(reader.read()), daemon=True)
        drain.start()
        for i in range(0, len(frames), 7):
            link.send_many(frames[i : i + 7])
        writer.close()
        drain.join(TIMEOUT)
        self.assertFalse(drain.is_alive())
        self.assertEqual(got, [b"buffered before the link" + b"".join(frames)])


class _Chunks(io.RawIOBase):
    """A reader that hands out ``data`` cut at the given offsets, one piece per read."""

    def __init__(self, data, cuts):
        self.pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)]) if b > a]
        self.sizes = []

    def readable(self):
        return True

    def read(self, n=-1):
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if 0 <= n < len(piece):
            piece, rest = piece[:n], piece[n:]
            self.pieces.insert(0, rest)
        self.sizes.append(len(piece))
        return piece


def _awkward_cuts(frames, first):
    """Cut offsets in ``b"".join(frames)``: frames ``first`` .. ``first + 2`` one byte
    per read, then length prefixes split after 1, 2 and 3 bytes, a body split in
    two, one read of 1 000 whole frames plus half a prefix, and the rest in one read."""
    starts = []
    at = 0
    for f in frames:
        starts.append(at)
        at += len(f)
    cuts = []
    for i in range(first, first + 3):
        cuts.extend(range(starts[i] + 1, starts[i] + len(frames[i]) + 1))
    for k, i in enumerate(range(first + 3, first + 6)):
        cuts.append(starts[i] + k + 1)  # inside the prefix: k + 1 of its 4 bytes
    i = first + 6
    cuts.append(starts[i] + 4 + (len(frames[i]) - 4) // 2)  # inside the body
    cuts.append(starts[i + 1000] + 2)  # 1 000 frames later, half a prefix on
    return sorted(set(c for c in cuts if 0 < c < at))


class StreamTest(unittest.TestCase):
    """Frames cut at every awkward place, or 1 000+ of them in one read: none lost,
    duplicated or answered twice."""

    N = 1200

    def frames(self):
        return [task(i, "echo" if i % 2 else "thread_echo", {"i": i, "pad": "x" * (i % 37)}) for i in range(1, self.N + 1)]

    def check_replies(self, messages):
        replies = [m for m in messages if m["type"] in ("result", "error")]
        self.assertEqual(sorted(m["id"] for m in replies), list(range(1, self.N + 1)), "one reply per task")
        for m in replies:
            self.assertEqual(m["type"], "result", m)
            self.assertEqual(msgpack.unpackb(m["payload"], raw=False), {"i": m["id"], "pad": "x" * (m["id"] % 37)})

    def test_link_returns_every_body_whatever_the_cuts(self):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        frames = self.frames()
        data = b"".join(frames)
        reader = _Chunks(data, _awkward_cuts(frames, 0))
        link = cortex_worker.Link(reader, _Recorder())
        bodies = []
        while True:
            got = link.read_bodies()
            if not got:
                break
            bodies.extend(got)
        self.assertEqual(bodies, [f[4:] for f in frames])
        self.assertEqual(reader.sizes[:3], [1, 1, 1], "the first frames came one byte per read")
        self.assertGreaterEqual(max(reader.sizes), 1000 * min(len(f) for f in frames), "one read held 1 000 frames")

    def run_in_process(self, concurrency, cut):
        sys.path.insert(0, HERE)
        self.addCleanup(sys.path.remove, HERE)
        import cortex_worker

        worker = cortex_worker.Worker()
        worker.handler("echo", inline=True)(lambda ctx, payload: payload)
        worker.handler("thread_echo")(lambda ctx, payload: payload)
        frames = [hello(concurrency=concurrency) if concurrency else hello()] + self.frames()
        frames.append(frame({"type": "shutdown", "graceful": True}))
        data = b"".join(frames)
        writer = _Recorder()
        reader = _Chunks(data, _awkward_cuts(frames, 1) if cut else [])
        self.assertEqual(worker.run(cortex_worker.Link(reader, writer)), 0)
        messages = [m for data in writer.writes for m in _split(data)]
        self.assertEqual(messages[0]["type"], "ready")
        self.check_replies(messages)

    def test_every_task_in_one_read_is_answered_once(self):
        for concurrency in (None, 1, 4):
            with self.subTest(concurrency=concurrency):
                self.run_in_process(concurrency, cut=False)

    def test_frames_cut_at_awkward_places_are_each_answered_once(self):
        for concurrency in (None, 1, 4):
            with self.subTest(concurrency=concurrency):
                self.run_in_process(concurrency, cut=True)

    def start(self):
        w = WorkerProcess()
        self.addCleanup(w.close)
        return w

    def test_a_process_fed_1200_tasks_in_one_write_answers_each_once(self):
        w = self.start()
        w.handshake()
        w.send(b"".join(task(i, "echo", {"i": i, "pad": "x" * (i % 37)}) for i in range(1, self.N + 1)))
        self.check_replies([w.recv() for _ in range(self.N)])
        w.send(frame({"type": "shutdown", "graceful": True}))
        self.assertIsNone(w.recv())
        self.assertEqual(w.wait(), 0)

    def test_a_process_fed_one_byte_at_a_time_answers_each_once(self):
        w = self.start()
        data = hello() + b"".join(task(i, "echo", i) for i in range(1, 6))
        w.send_bytewise(data)
        self.assertEqual(w.recv()["type"], "ready")
        replies = [w.recv() for _ in range(5)]
        self.assertEqual([(m["type"], m["id"], msgpack.unpackb(m["payload"])) for m in replies], [("result", i, i) for i in range(1, 6)])

    def test_tasks_then_shutdown_in_one_write_are_all_answered_before_the_exit(self):
        w = self.start()
        w.handshake(concurrency=2)
        # Every third task sleeps on a thread, so tasks queue up behind it.
        tasks = b"".join(
            task(i, "sleep", {"ms": 0}) if i % 3 == 0 else task(i, "echo", {"i": i, "pad": "x" * (i % 37)})
            for i in range(1, self.N + 1)
        )
        w.send(tasks + frame({"type": "shutdown", "graceful": True}))
        replies = [w.recv() for _ in range(self.N)]
        self.assertEqual(sorted(m["id"] for m in replies), list(range(1, self.N + 1)), "one reply per task")
        for m in replies:
            expected = {"slept_ms": 0} if m["id"] % 3 == 0 else {"i": m["id"], "pad": "x" * (m["id"] % 37)}
            self.assertEqual((m["type"], msgpack.unpackb(m["payload"], raw=False)), ("result", expected))
        self.assertIsNone(w.recv())
        self.assertEqual(w.wait(), 0)

    def test_a_cancel_in_the_same_write_as_its_task_gets_one_reply(self):
        cancel = lambda i: frame({"type": "cancel", "id": i})  # noqa: E731
        for concurrency in (None, 1):
            with self.subTest(concurrency=concurrency):
                w = self.start()
                w.handshake(**({"concurrency": concurrency} if concurrency else {}))
                # 1 runs (on a thread) and is cancelled; 2 waits behind it with
                # concurrency 1 (else runs inline and ends before its cancel is read).
                w.send(task(1, "sleep", {"ms": 60_000}) + task(2, "echo", "two") + cancel(2) + cancel(1))
                replies = {m["id"]: m for m in (w.recv(), w.recv())}
                self.assertEqual(sorted(replies), [1, 2])
                self.assertEqual((replies[1]["type"], replies[1]["kind"]), ("error", "cancelled"))
                if concurrency == 1:
                    self.assertEqual((replies[2]["type"], replies[2]["kind"]), ("error", "cancelled"))
                    self.assertIn("before it started", replies[2]["message"])
                else:
                    self.assertEqual((replies[2]["type"], msgpack.unpackb(replies[2]["payload"])), ("result", "two"))
                # Nothing more for those ids: the next reply is the next task's.
                w.send(task(3, "echo", "after"))
                self.assertEqual(w.recv()["id"], 3)
                w.close()


class FifoTest(unittest.TestCase):
    def start_fifo_worker(self, stdout=subprocess.DEVNULL, command=(sys.executable, WORKER), **extra_env):
        """Starts the example worker (by ``command``) over two fresh FIFOs (removed
        after the test); returns the process and the FIFOs' paths (to the worker,
        from the worker)."""
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        to_worker = os.path.join(tmp.name, "to-worker")
        from_worker = os.path.join(tmp.name, "from-worker")
        os.mkfifo(to_worker, 0o600)
        os.mkfifo(from_worker, 0o600)
        env = dict(
            os.environ,
            CORTEX_TRANSPORT="fifo",
            CORTEX_FIFO_TO_WORKER=to_worker,
            CORTEX_FIFO_FROM_WORKER=from_worker,
            **extra_env,
        )
        proc = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=subprocess.PIPE, env=env, cwd=HERE,
        )
        self.addCleanup(proc.stderr.close)
        if proc.stdout is not None:
            self.addCleanup(proc.stdout.close)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        return proc, to_worker, from_worker

    def test_fifo_transport(self):
        proc, to_worker, from_worker = self.start_fifo_worker()
        # The worker opens to-worker for reading first, then from-worker for writing.
        with open(to_worker, "wb") as out, open(from_worker, "rb") as inp:
            out.write(hello() + task(1, "echo", [1, 2]))
            out.flush()
            messages = read_messages(inp, 2)
            self.assertEqual([m["type"] for m in messages], ["ready", "result"])
            self.assertEqual(msgpack.unpackb(messages[1]["payload"]), [1, 2])
        self.assertEqual(proc.wait(TIMEOUT), 0)

    def test_print_in_a_handler_reaches_stderr_with_fifos(self):
        proc, to_worker, from_worker = self.start_fifo_worker(stdout=subprocess.PIPE)
        with open(to_worker, "wb") as out, open(from_worker, "rb") as inp:
            out.write(hello() + task(1, "noisy", "quiet"))
            out.flush()
            messages = read_messages(inp, 2)
            self.assertEqual([m["type"] for m in messages], ["ready", "result"])
            self.assertEqual(msgpack.unpackb(messages[1]["payload"]), "quiet")
        self.assertEqual(proc.wait(TIMEOUT), 0)
        err = proc.stderr.read().decode()
        for way in ("print()", "sys.stdout.write", "os.write(1)"):
            self.assertIn(f"noisy handler: {way}", err)
        self.assertEqual(proc.stdout.read(), b"", "nothing reaches descriptor 1")

    def test_a_worker_started_through_a_wrapper_waits_for_a_slow_manager(self):
        # A shell that does not exec the worker is its parent, not the manager
        # (this test, CORTEX_MANAGER_PID): that is no orphan. While the manager is
        # slow to open the from-worker FIFO, the worker checks every 100 ms that
        # its parent did not change, and waits.
        wrapper = ["sh", "-c", '"$0" "$1"; exit $?', sys.executable, WORKER]
        proc, to_worker, from_worker = self.start_fifo_worker(command=wrapper, CORTEX_MANAGER_PID=str(os.getpid()))
        with open(to_worker, "wb") as out:
            # The worker has opened its read end and waits to open the other FIFO.
            # A slow manager: several of the worker's checks pass meanwhile (what is
            # asserted does not depend on how many: a worker that exits fails it).
            time.sleep(0.5)
            # Non-blocking, so that a worker that exited fails the test (at EOF)
            # instead of hanging it in the open.
            fd = os.open(from_worker, os.O_RDONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            with open(fd, "rb") as inp:
                out.write(hello() + task(1, "echo", "served"))
                out.flush()
                messages = read_messages(inp, 2)
        self.assertEqual([m["type"] for m in messages], ["ready", "result"])
        self.assertEqual(msgpack.unpackb(messages[1]["payload"]), "served")
        self.assertEqual(proc.wait(TIMEOUT), 0)

    def test_a_worker_whose_manager_pid_names_no_process_exits(self):
        # Orphaned before it could look: the pid its manager left names no
        # process, and its parent never changes while it waits. It exits 2 at
        # its next check instead of waiting out the FIFO deadline of a minute.
        gone = subprocess.Popen(["true"])
        gone.wait()
        proc, _, _ = self.start_fifo_worker(CORTEX_MANAGER_PID=str(gone.pid))
        self.assertEqual(proc.wait(TIMEOUT), 2)
        self.assertIn(b"the manager went away", proc.stderr.read())


if __name__ == "__main__":
    unittest.main()
