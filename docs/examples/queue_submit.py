#!/usr/bin/env python3
"""Submit tasks to cortex-pool's NATS JetStream queue and read their results.

Any language with a NATS client can do what `cortex-pool submit --queue` does
(see docs/queue.md): publish the task's JSON line on the subject of its
priority band with the task id as `Nats-Msg-Id`, then read the result line
from the `cortex-results` key-value bucket under the task id.

    python3 -m pip install nats-py
    python3 docs/examples/queue_submit.py nats://127.0.0.1:4222
"""

import asyncio
import json
import sys
import uuid

import nats
from nats.js.errors import KeyNotFoundError


def band(priority):
    """The subject token of a priority (0 highest ... 100 lowest)."""
    if priority <= 33:
        return "high"
    if priority <= 66:
        return "normal"
    return "low"


async def main(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    ids = []
    for n in range(3):
        task = {
            "id": f"py-{uuid.uuid4()}",
            "type": "echo",
            "payload": {"n": n},
            "priority": 10 * n,
        }
        ack = await js.publish(
            f"cortex.tasks.{band(task['priority'])}",
            json.dumps(task).encode(),
            headers={"Nats-Msg-Id": task["id"]},
        )
        assert not ack.duplicate
        ids.append(task["id"])
        print(json.dumps({"id": task["id"], "status": "accepted"}))
    # Publishing the same id again inside the duplicate window enqueues nothing.
    again = await js.publish(
        "cortex.tasks.high",
        json.dumps({"id": ids[0], "type": "echo", "payload": {"n": 0}}).encode(),
        headers={"Nats-Msg-Id": ids[0]},
    )
    assert again.duplicate

    # The results bucket: one `run`-format line per task id.
    kv = await js.key_value("cortex-results")
    ok = True
    for task_id in ids:
        for _ in range(300):
            try:
                entry = await kv.get(task_id)
                break
            except KeyNotFoundError:
                await asyncio.sleep(0.1)
        else:
            print(json.dumps({"id": task_id, "status": "unknown"}))
            ok = False
            continue
        line = json.loads(entry.value)
        print(json.dumps(line))
        ok = ok and line["status"] == "ok"
    await nc.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222")))
