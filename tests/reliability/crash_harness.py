"""Random ``kill -9`` of outbox writers and model installers, forked from a clean zygote.

    python -m tests.reliability.crash_harness SPEC.json

The zygote imports everything once, then for each kill forks a child that opens the
on-disk state as a restarted device would, reports what it finds, and goes back to work
(appending to the outbox, or applying releases) until SIGKILL arrives at a random moment.
Forking keeps a restart at a few milliseconds, so hundreds of kills fit in a test run; the
zygote itself never opens a model or a network connection, so every child starts clean.

Children write one line per fact to a pipe (``os.write`` of a short line is atomic, so a
kill never leaves half a line): ``O next_seq depth`` (outbox opened), ``C seq`` (append
returned: the row is committed), ``B version sha256 label`` (booted a model and it
answered), ``S state version`` (updater transition), ``E text`` (a broken invariant).
The zygote prints one JSON summary at the end; the tests judge it.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.inference import InferenceError, ModelSlot
from edge_agent.outbox import OutboxError, OutboxPublisher, OutboxStore, Priority
from edge_agent.protocol import ReleaseManifest, SigningKey, UpdateEvent, UpdateState
from edge_agent.protocol.bundle import ModelSpec
from edge_agent.sources.sample import Sample
from edge_agent.updater.boot import ProvisionedModel
from edge_agent.updater.config import UpdaterConfig
from edge_agent.updater.service import ModelUpdater
from tests.support.onnx_models import red_frame


def emit(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


# -- outbox workload ----------------------------------------------------------------------


def outbox_child(fd: int, spec: dict[str, Any]) -> None:
    """Open the outbox, then append and publish as fast as the disk allows."""
    try:
        store = OutboxStore(Path(spec["db"]))
    except OutboxError as e:
        emit(fd, f"E outbox does not open: {e}")
        return
    emit(fd, f"O {store.next_seq} {store.depth}")
    link = MqttLink(
        BrokerEndpoint("127.0.0.1", int(spec["port"])), client_id=f"crash-{os.getpid()}"
    )
    link.start(timeout=None)
    publisher = OutboxPublisher(store, link)
    publisher.start()
    i = 0

    def payload(seq: int) -> bytes:
        return json.dumps({"seq": seq, "i": i}).encode()

    while True:
        seq = store.append(
            spec["topic"],
            payload,
            Priority.PREDICTION,
        )
        publisher.notify()
        emit(fd, f"C {seq}")
        i += 1


# -- model install workload ---------------------------------------------------------------


def _manifest(key: SigningKey, model: dict[str, Any], version: int) -> ReleaseManifest:
    spec = ModelSpec.model_validate_json(model["spec"])
    unsigned = ReleaseManifest(
        release_id=f"catdog-v{version}-p{os.getpid()}",
        model="catdog",
        version=version,
        sha256=model["sha256"],
        size=model["size"],
        urls=[model["url"]],
        inputs=spec.inputs,
        outputs=spec.outputs,
        created=datetime.now(UTC),
        publisher="cloud",
    )
    return key.sign(unsigned)


def install_child(fd: int, spec: dict[str, Any]) -> None:
    """Boot as a restarted device, check the model answers, then apply releases forever."""
    config = UpdaterConfig.model_validate(spec["updater"])
    updater = ModelUpdater(config, model="catdog", device_id="cam-01", sink=lambda _e: None)
    settled = threading.Event()
    waiting_for = [0]  # the version whose outcome the release loop waits for

    def on_event(event: UpdateEvent) -> None:
        emit(fd, f"S {event.state.value} {event.to_version}")
        final = (UpdateState.COMMITTED, UpdateState.ROLLED_BACK, UpdateState.FAILED)
        if event.state in final and event.to_version == waiting_for[0]:
            settled.set()

    updater.add_transition_hook(on_event)
    engine = updater.boot(ProvisionedModel(Path(spec["provisioned"]), 1))
    active = updater.state.active
    if active is None or active.sha256 != engine.sha256:
        emit(fd, f"E booted {engine.sha256[:12]} but the state names {active}")
        return
    sample = Sample(ts=datetime.now(UTC), input_id="boot", frame=red_frame())
    try:
        answer = engine.predict(sample, with_stats=False)
    except InferenceError as e:
        emit(fd, f"E booted version {active.version} does not predict: {e}")
        return
    emit(fd, f"B {active.version} {engine.sha256} {answer.label}")
    if spec.get("boot_only"):
        return
    slot = ModelSlot(engine)
    updater.start(slot)

    def feed() -> None:
        n = 0
        while True:
            frame = Sample(ts=datetime.now(UTC), input_id=f"f{n}", frame=red_frame())
            try:
                updater.predict(slot, frame)
            except InferenceError as e:
                emit(fd, f"E live prediction failed: {e}")
            n += 1
            time.sleep(0.002)

    threading.Thread(target=feed, daemon=True).start()
    key = SigningKey.load(Path(spec["key"]))
    models = spec["models"]
    version = active.version
    while True:
        version += 1
        settled.clear()
        waiting_for[0] = version
        updater.offer(_manifest(key, models[version % len(models)], version))
        if not settled.wait(20):
            emit(fd, f"E release v{version} did not settle in 20 s")
            return


WORKLOADS = {"outbox": outbox_child, "install": install_child}


# -- the zygote ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What the zygote learnt from every child's lines, in order."""

    kills: int = 0
    lines: list[tuple[int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    max_committed: int = -1
    opened_behind: int = 0
    last_state: dict[str, int] = field(default_factory=dict)


def run_child(workload: str, spec: dict[str, Any], kill_after: float | None) -> list[str]:
    """Fork one child; SIGKILL it after ``kill_after`` seconds (None: let it finish)."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        code = 0
        try:
            WORKLOADS[workload](write_fd, spec)
        except BaseException:  # report anything: the parent judges
            emit(write_fd, "E " + traceback.format_exc().replace("\n", " | ")[-400:])
            code = 1
        os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = None if kill_after is None else time.monotonic() + kill_after
    killed = False
    while True:
        wait = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], wait)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break  # the child ended by itself (and closed the pipe)
            chunks.append(chunk)
            continue
        if deadline is None:
            chunks.append(b"E child silent for 30 s\n")
        os.kill(pid, signal.SIGKILL)
        killed = True
        break
    os.waitpid(pid, 0)
    if killed:
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    os.close(read_fd)
    return b"".join(chunks).decode().splitlines()


def check_outbox_opens(db: Path, tally: Tally) -> None:
    """After a kill: the file opens and counts past every seq a writer ever returned."""
    try:
        store = OutboxStore(db)
    except OutboxError as e:
        tally.errors.append(f"kill {tally.kills}: outbox does not open: {e}")
        return
    try:
        if store.next_seq <= tally.max_committed:
            tally.opened_behind += 1
            tally.errors.append(
                f"kill {tally.kills}: next_seq {store.next_seq} <= committed {tally.max_committed}"
            )
    finally:
        store.close()


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    workload: str = spec["workload"]
    rng = random.Random(spec.get("seed", 1))  # kill timing, not secrets
    low, high = spec["kill_window_s"]
    tally = Tally()
    started = time.monotonic()
    for _ in range(int(spec["kills"])):
        lines = run_child(workload, spec, rng.uniform(low, high))
        tally.kills += 1
        for line in lines:
            tally.lines.append((tally.kills, line))
            kind, _, rest = line.partition(" ")
            if kind == "E":
                tally.errors.append(f"kill {tally.kills}: {rest}")
            elif kind == "C":
                seq = int(rest)
                if seq <= tally.max_committed:
                    tally.errors.append(f"kill {tally.kills}: seq {seq} not above earlier ones")
                tally.max_committed = max(tally.max_committed, seq)
        last = next((ln for ln in reversed(lines) if ln[:1] in "SB"), "none")
        state = "boot" if last.startswith("B") else last.split(" ")[1] if " " in last else last
        tally.last_state[state] = tally.last_state.get(state, 0) + 1
        if workload == "outbox":
            check_outbox_opens(Path(spec["db"]), tally)
    final = run_child(workload, {**spec, "boot_only": True}, None) if workload == "install" else []
    for line in final:
        tally.lines.append((tally.kills + 1, line))
        if line.startswith("E "):
            tally.errors.append(f"final boot: {line[2:]}")
    summary = {
        "workload": workload,
        "kills": tally.kills,
        "seconds": round(time.monotonic() - started, 2),
        "errors": tally.errors[:50],
        "error_count": len(tally.errors),
        "killed_in": tally.last_state,
        "final": final,
        "lines_file": spec["lines_file"],
    }
    with Path(spec["lines_file"]).open("w") as f:
        for cycle, line in tally.lines:
            f.write(f"{cycle} {line}\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
