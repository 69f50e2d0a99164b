"""Locust users for ``bench_http_load``: one target per run, chosen by BENCH_TARGET.

Run by ``bench_http_load`` as ``locust -f benchmarks/locust_targets.py --headless``; at exit
it writes every response's status and time to BENCH_OUT, so the bench computes rates and
percentiles per status (accepted requests apart from the 503s shed under overload).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

TARGET = os.environ.get("BENCH_TARGET", "bare")
BODY: Any = Path(os.environ["BENCH_BODY"]).read_bytes() if os.environ.get("BENCH_BODY") else b""
TIMES: dict[int, list[float]] = {}
ERRORS: Counter[str] = Counter()
# The fleet's reads need a token; the bench gives its throwaway fleet a viewer token.
FLEET_AUTH = {"Authorization": f"Bearer {os.environ.get('BENCH_FLEET_TOKEN', '')}"}


def on_request(response_time: float, response: Any = None, exception: Any = None, **_: Any) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    TIMES.setdefault(status, []).append(float(response_time))
    if exception is not None and status == 0:
        ERRORS[type(exception).__name__] += 1


def on_quitting(environment: Any, **_: Any) -> None:
    out = os.environ.get("BENCH_OUT")
    if out:
        Path(out).write_text(json.dumps({"times": TIMES, "errors": dict(ERRORS)}))
    environment.process_exit_code = 0  # the bench judges the statuses itself


events.request.add_listener(on_request)
events.quitting.add_listener(on_quitting)


class TargetUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def call(self) -> None:
        if TARGET == "predict":
            headers = {"content-type": "image/jpeg"}
            with self.client.post(
                "/predict", data=BODY, headers=headers, catch_response=True
            ) as response:
                response.success()
        elif TARGET == "fleet":
            with self.client.get(
                "/api/devices", headers=FLEET_AUTH, catch_response=True
            ) as response:
                response.success()
        else:
            with self.client.get("/ping", catch_response=True) as response:
                response.success()
