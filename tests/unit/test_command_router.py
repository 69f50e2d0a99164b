"""Commands run once per cmd_id: repeats get the first outcome, across restarts, on real files."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from edge_agent.protocol.messages import Command, utc_now
from edge_agent.runtime.command_history import CommandHistory
from edge_agent.runtime.commands import CommandRejected, CommandRouter


def _command(cmd_id: str, device: str = "cam-01") -> Command:
    return Command(
        device_id=device,
        ts=utc_now(),
        seq=1,
        cmd_id=cmd_id,
        action="capture",
        issued_by="cloud",
    )


class Counting:
    """A handler that counts its runs (optionally refusing, or blocking until released)."""

    def __init__(self, refuse: bool = False, gate: threading.Event | None = None) -> None:
        self.runs = 0
        self.refuse = refuse
        self.gate = gate

    def __call__(self, command: Command) -> str:
        self.runs += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.refuse:
            raise CommandRejected("nothing to capture")
        return f"captured for {command.cmd_id}"


def _router(path: Path | None, handler: Counting) -> CommandRouter:
    router = CommandRouter("cam-01", path)
    router.register("capture", handler)
    return router


def test_a_repeated_id_runs_once_and_repeats_the_outcome(tmp_path: Path) -> None:
    handler = Counting()
    router = _router(tmp_path / "outbox.commands.json", handler)
    first = router.handle(_command("c1"))
    second = router.handle(_command("c1"))
    assert handler.runs == 1
    assert (first.result, first.detail) == ("done", "captured for c1")
    assert second.result == "done"
    assert second.detail is not None and second.detail.startswith("duplicate of c1, done at ")
    assert second.detail.endswith(": captured for c1")
    assert router.handle(_command("c2")).result == "done" and handler.runs == 2


def test_refusals_and_expiries_are_repeated_too(tmp_path: Path) -> None:
    handler = Counting(refuse=True)
    router = _router(tmp_path / "h.json", handler)
    assert router.handle(_command("r1")).result == "rejected"
    again = router.handle(_command("r1"))
    assert again.result == "rejected" and handler.runs == 1
    assert again.detail is not None and "nothing to capture" in again.detail


def test_a_command_for_another_device_is_not_remembered(tmp_path: Path) -> None:
    handler = Counting()
    router = _router(tmp_path / "h.json", handler)
    assert router.handle(_command("x1", device="cam-02")).result == "rejected"
    assert router.history.get("x1") is None
    assert router.handle(_command("x1")).result == "done" and handler.runs == 1


def test_ids_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.commands.json"
    _router(path, Counting()).handle(_command("c1"))
    handler = Counting()
    restarted = _router(path, handler)
    again = restarted.handle(_command("c1"))
    assert handler.runs == 0 and again.result == "done"
    assert again.detail is not None and again.detail.startswith("duplicate of c1")
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_a_command_cut_short_by_a_crash_is_not_run_again(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    # What the file holds when the process died inside the handler: the write-ahead entry.
    CommandHistory(path).record("c9", "accepted", None)
    handler = Counting()
    outcome = _router(path, handler).handle(_command("c9"))
    assert handler.runs == 0 and outcome.result == "accepted"
    assert outcome.detail is not None and "cut short by a restart" in outcome.detail


def test_a_repeat_while_the_first_runs_waits_for_its_outcome(tmp_path: Path) -> None:
    gate = threading.Event()
    handler = Counting(gate=gate)
    router = _router(tmp_path / "h.json", handler)
    outcomes = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(router.handle(_command("slow"))))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(10)
    assert handler.runs == 1
    assert sorted(o.result for o in outcomes) == ["done", "done"]
    assert sum(1 for o in outcomes if o.detail and o.detail.startswith("duplicate")) == 1


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01garbage",
        b'{"version": 1, "commands": [{"cmd_id": 5}]}',
        b'{"version": 2, "commands": []}',
        b"",
    ],
)
def test_a_corrupt_file_is_logged_and_the_agent_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "h.json"
    path.write_bytes(content)
    handler = Counting()
    with caplog.at_level(logging.ERROR, logger="edge_agent.runtime.command_history"):
        router = _router(path, handler)
    assert "is corrupt" in caplog.text and "starting empty" in caplog.text
    assert router.handle(_command("c1")).result == "done" and handler.runs == 1
    saved = json.loads(path.read_text())
    assert [c["cmd_id"] for c in saved["commands"]] == ["c1"]


def test_an_unwritable_history_does_not_stop_commands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where the history's folder should be (root ignores modes)
    path = blocker / "h.json"
    handler = Counting()
    router = _router(path, handler)
    with caplog.at_level(logging.ERROR, logger="edge_agent.runtime.command_history"):
        assert router.handle(_command("c1")).result == "done"
    assert "cannot save command history" in caplog.text
    assert str(router.handle(_command("c1")).detail).startswith("duplicate")  # in memory


def test_the_history_is_bounded_by_count_and_age(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    history = CommandHistory(path, max_entries=3)
    for i in range(5):
        history.record(f"c{i}", "done", None)
    saved = json.loads(path.read_text())["commands"]
    assert [c["cmd_id"] for c in saved] == ["c2", "c3", "c4"]
    old = time.time() - 8 * 24 * 3600
    saved[0]["at"] = old
    path.write_text(json.dumps({"version": 1, "commands": saved}))
    reloaded = CommandHistory(path)
    assert reloaded.get("c2") is None and reloaded.get("c3") is not None and len(reloaded) == 2
