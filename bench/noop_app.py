"""A do-nothing Quart-Trio endpoint on Hypercorn: the webhook benchmark's baseline.

It reads the body and answers the same JSON botd answers, nothing else. Usage:
``python bench/noop_app.py PORT``; prints ``listening http://127.0.0.1:PORT`` when ready.
"""

from __future__ import annotations

import sys

import hypercorn.config
import hypercorn.trio
import trio
from quart import Response, request
from quart_trio import QuartTrio

app = QuartTrio("noop")


@app.route("/webhook/chat2desk", methods=["POST"])
async def webhook() -> Response:
    await request.get_data(cache=False)
    return Response('{"status": "queued"}', status=200, content_type="application/json")


async def main(port: int) -> None:
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 75.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: hypercorn.trio.serve(app, config, task_status=task_status)
        )
        print(f"listening {binds[0]}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
