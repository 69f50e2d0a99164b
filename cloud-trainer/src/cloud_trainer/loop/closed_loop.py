"""The closed loop on one machine: drift alert → retrain → gate → canary → promote → update."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloud_trainer.errors import UserError
from cloud_trainer.fleet.policy.engine import PolicyDecision
from cloud_trainer.loop.devices import AgentProcess, device_config
from cloud_trainer.loop.footage import park_footage
from cloud_trainer.loop.scenario import WeatherScenario
from cloud_trainer.loop.stack import LocalStack, PolicyRuleSpec
from cloud_trainer.loop.timeline import Entry, Timeline
from cloud_trainer.registry import parse_models_uri
from cloud_trainer.release.publisher import ReleaseTarget
from cloud_trainer.release.restore import from_fleet
from cloud_trainer.release.rollout import Action, RolloutController, RolloutPolicy, Wave
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.protocol import ReleaseManifest, UpdateState

log = logging.getLogger(__name__)

WEATHER_DEVICE = "port-ws-01"
CAMERA_DEVICE = "park-cam-01"


@dataclass(frozen=True)
class LoopSettings:
    workdir: Path
    weather_history: Path
    pets: Path | None
    broker: BrokerEndpoint | None = None
    replay_speed: float = 36_000.0  # 10 station hours per second
    timeout_s: float = 540.0


@dataclass
class LoopReport:
    """Facts and timings of one run (seconds from the start of the loop)."""

    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, list[int]] = field(default_factory=dict)
    retrain: list[str] = field(default_factory=list)
    visits: list[str] = field(default_factory=list)
    rollout: str | None = None
    outcome: str = ""
    ok: bool = False
    problems: list[str] = field(default_factory=list)


class ClosedLoop:
    """Runs the whole product on embedded defaults and reports what happened."""

    def __init__(self, settings: LoopSettings, echo: Callable[[Entry], None]) -> None:
        self.settings = settings
        self.echo = echo
        self.report = LoopReport()
        self.scenario = WeatherScenario.for_history(settings.weather_history)
        self.started = time.monotonic()
        self.stack: LocalStack | None = None
        self.timeline: Timeline | None = None
        self.weather_model = "weather-rain-4h"
        self._rollouts: list[threading.Thread] = []
        # One retrain at a time, and none once the loop is winding down.
        self._retrain_lock = threading.Lock()
        self._closing = threading.Event()
        self._promoted_version = 0
        # Set when a retrain's candidate is refused by the gate and nothing newer serves.
        self._gate_kept_champion = threading.Event()

    # -- steps -------------------------------------------------------------------------

    def _mark(self, name: str) -> None:
        """Record when a step first happened."""
        self.report.timings.setdefault(name, round(time.monotonic() - self.started, 1))

    def _say(self, text: str, device: str = "cloud") -> None:
        if self.timeline is not None:
            self.timeline.note(device, text)
        else:
            self.echo(Entry(time.monotonic() - self.started, device, text))

    def _train_weather(self, data: Path, label: str) -> tuple[int, Path, bool, list[str]]:
        from cloud_trainer.weather.pipeline import train_weather
        from cloud_trainer.weather.settings import TrainSettings

        assert self.stack is not None
        outcome = train_weather(
            TrainSettings(
                data=data,
                store=self.stack.store.tracking_uri,
                quick=True,
                work_dir=self.settings.workdir / "runs" / label,
            )
        )
        if outcome.registered is None or outcome.decision is None:
            raise UserError(f"weather training {label} registered nothing")
        metrics = outcome.test_metrics
        self._say(
            f"trained {self.weather_model} v{outcome.registered.version} on {label}: "
            f"test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
        )
        return (
            outcome.registered.version,
            outcome.export.path,
            outcome.decision.promote,
            list(outcome.decision.reasons),
        )

    def _train_camera(self) -> tuple[str, int, Path]:
        from cloud_trainer.catdog.cli import default_negatives
        from cloud_trainer.catdog.pipeline import PipelineSettings, run_pipeline
        from cloud_trainer.catdog.train import TrainSettings

        assert self.stack is not None and self.settings.pets is not None
        report = run_pipeline(
            PipelineSettings(
                data=self.settings.pets,
                negatives=default_negatives(self.settings.pets),
                work_dir=self.settings.workdir / "runs" / "catdog",
                train=TrainSettings(size=160, feature_views=2, cnn_epochs=4),
                calibration_images=32,
                store=self.stack.store.tracking_uri,
            )
        )
        # The int8 variant is the edge default when its accuracy check passed.
        variant = report.int8 if report.int8_check.get("passed") else report.fp32
        if variant.registered is None:
            raise UserError("camera model was not registered")
        name, version, _alias = parse_models_uri(variant.registered)
        assert version is not None
        self._say(
            f"trained {name} v{version}: balanced accuracy "
            f"{variant.test.balanced_accuracy:.3f} on held-out photos"
        )
        return name, version, Path(variant.path)

    def _release(self, model: str, version: int, path: Path) -> ReleaseManifest:
        assert self.stack is not None
        manifest = self.stack.publish(self.stack.prepare(model, version, path))
        self._say(f"released {model} v{version} ({manifest.release_id})")
        return manifest

    def _start_devices(
        self, weather: tuple[int, Path], camera: tuple[str, int, Path] | None
    ) -> list[AgentProcess]:
        assert self.stack is not None
        devices_dir = self.settings.workdir / "devices"
        broker, public_key = self.stack.endpoint, self.stack.public_key_path
        replay = self.scenario.station_replay(devices_dir / "station-summer.csv")
        agents = [
            AgentProcess.write(
                WEATHER_DEVICE,
                device_config(
                    device_id=WEATHER_DEVICE,
                    site="port",
                    kind="weather",
                    groups=["canary"],
                    source={
                        "type": "csv_replay",
                        "path": str(replay),
                        "speed": self.settings.replay_speed,
                    },
                    model_name=self.weather_model,
                    model_path=weather[1],
                    model_version=weather[0],
                    data_dir=devices_dir / WEATHER_DEVICE,
                    drift={"enabled": True},
                    broker=broker,
                    fleet_public_key=public_key,
                ),
                devices_dir,
            )
        ]
        if camera is not None:
            from cloud_trainer.catdog.cli import default_negatives

            video = devices_dir / "park-gate.avi"
            pets = self.settings.pets or Path()
            park_footage(pets, video, empty_dir=default_negatives(pets))
            agents.append(
                AgentProcess.write(
                    CAMERA_DEVICE,
                    device_config(
                        device_id=CAMERA_DEVICE,
                        site="park",
                        kind="camera",
                        groups=[],
                        source={"type": "camera", "uri": str(video), "fps": 5, "on_end": "loop"},
                        model_name=camera[0],
                        model_path=camera[2],
                        model_version=camera[1],
                        data_dir=devices_dir / CAMERA_DEVICE,
                        drift={"enabled": True},
                        # The footage's empty stretches last 3 s: a visit ends within them.
                        visits={"quiet_s": 1.5, "min_frames": 2},
                        broker=broker,
                        fleet_public_key=public_key,
                    ),
                    devices_dir,
                )
            )
        for agent in agents:
            agent.start()
            self._say(f"agent started ({agent.config_path.name})", agent.name)
        return agents

    # -- the policy engine's retrain handler ------------------------------------------

    def retrain(self, decision: PolicyDecision) -> str:
        """Retrain on the station's archive up to its own clock; release through the gate."""
        assert self.timeline is not None
        if decision.model_name != self.weather_model:
            return f"no retraining pipeline for {decision.model_name}"
        with self._retrain_lock:
            if self._closing.is_set():
                return "skipped: the loop is shutting down"
            if decision.model_version < self._promoted_version:
                return (
                    f"skipped: v{self._promoted_version} already replaces v{decision.model_version}"
                )
            return self._retrain(decision)

    def _retrain(self, decision: PolicyDecision) -> str:
        assert self.timeline is not None
        self._mark("retrain_started")
        clock = self.timeline.view(decision.device_id).clock
        if clock is None:
            raise RuntimeError(f"no predictions from {decision.device_id} yet: no station clock")
        self._say(
            f"policy '{decision.rule}': retrain {decision.model_name} "
            f"(alert {decision.alert_id}: {decision.reason})"
        )
        archive = self.scenario.archive_until(
            self.settings.workdir / "archive" / f"weather-until-{clock:%Y%m%dT%H}.csv", clock
        )
        version, path, promoted, reasons = self._train_weather(
            archive, f"archive to {clock:%Y-%m-%d %H:%M}"
        )
        self._mark("retrain_finished")
        self.report.retrain.append(f"v{version}: {'promoted' if promoted else 'kept challenger'}")
        for reason in reasons:
            self._say(f"gate: {reason}")
        if not promoted:
            if self._promoted_version == 0:
                self._gate_kept_champion.set()
            return f"v{version} kept as challenger by the gate"
        self._promoted_version = version
        thread = threading.Thread(
            target=self._roll_out, args=(version, path), name="rollout", daemon=True
        )
        thread.start()
        self._rollouts.append(thread)
        return f"v{version} promoted to champion; staged rollout started"

    def _roll_out(self, version: int, path: Path) -> None:
        assert self.stack is not None
        stack = self.stack
        manifest = stack.prepare(self.weather_model, version, path)
        controller = RolloutController(
            stack.link,
            stack.tree,
            stack.channel,
            RolloutPolicy(
                waves=(Wave(0.0, ("canary",)), Wave(100.0)),
                min_outcomes=1,
                max_failure_rate=0.0,
                soak_s=2.0,
                wave_timeout_s=180.0,
            ),
            on_decision=lambda d: log.debug("rollout: %s", d.reason),
            restore=[from_fleet(stack.fleet.base_url, stack.viewer_token)],
        )
        self._mark("release_published")
        self._say(f"rollout of {self.weather_model} v{version}: wave 0 = group 'canary'")
        decision = controller.run(manifest, ReleaseTarget())
        self.report.rollout = f"{decision.action.value}: {decision.reason}"
        self._say(f"rollout {decision.action.value}: {decision.reason}")
        if decision.action is Action.DONE:
            from cloud_trainer.release.publisher import record_in_registry

            record_in_registry(manifest)
            stack.released[self.weather_model] = manifest

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> LoopReport:
        s = self.settings
        rules = [
            PolicyRuleSpec("retrain-weather-on-drift", self.weather_model, ("notify", "retrain")),
            PolicyRuleSpec("notify-camera-drift", "*", ("notify",)),
        ]
        self.stack = LocalStack.start(s.workdir, rules, {"retrain": self.retrain}, s.broker)
        agents: list[AgentProcess] = []
        try:
            self.timeline = Timeline(self.stack.endpoint, self.stack.tree, self.echo).start()
            self._say(
                f"stack up: broker {self.stack.endpoint.host}:{self.stack.endpoint.port}, "
                f"fleet {self.stack.fleet.base_url}, artefacts {self.stack.artefacts.base_url}"
            )
            sc = self.scenario
            initial = sc.initial_data(s.workdir / "data" / "weather-initial.csv")
            v1, v1_path, _promoted, _reasons = self._train_weather(
                initial, f"{sc.initial_since:%Y-%m} to {sc.initial_until:%Y-%m}"
            )
            self._release(self.weather_model, v1, v1_path)
            camera = None
            if s.pets is not None:
                camera = self._train_camera()
                self._release(camera[0], camera[1], camera[2])
            self._mark("models_released")
            agents = self._start_devices((v1, v1_path), camera)
            self._watch(v1, agents, camera is not None)
        finally:
            self._closing.set()
            for agent in agents:
                code = agent.stop()
                self._say(f"agent stopped (exit {code})", agent.name)
            for thread in self._rollouts:
                thread.join(10)
            self.stack.fleet.policy.wait(30)
            if self.timeline is not None:
                self.timeline.stop()
            self._collect()
            self.stack.close()
        return self.report

    def _watch(self, v1: int, agents: list[AgentProcess], with_camera: bool) -> None:
        timeline = self.timeline
        assert timeline is not None
        deadline = self.started + self.settings.timeout_s
        weather = timeline.view(WEATHER_DEVICE)

        def wait(name: str, predicate: Callable[[], bool]) -> bool:
            left = deadline - time.monotonic()
            if not timeline.wait_for(
                lambda: predicate() or not all(a.running for a in agents), left
            ):
                self.report.problems.append(f"timed out waiting for {name}")
                return False
            dead = [a for a in agents if not a.running]
            if dead and not predicate():
                for agent in dead:
                    self.report.problems.append(f"{agent.name} exited: {agent.tail(5)}")
                return False
            self._mark(name)
            return True

        if not wait("first_weather_prediction", lambda: weather.predictions[v1] > 0):
            return
        if with_camera:
            camera = timeline.view(CAMERA_DEVICE)
            wait("first_camera_visit", lambda: any(v.phase == "end" for v in camera.visits))
        if not wait("drift_alert", lambda: any(a.state == "raised" for a in weather.alerts)):
            return

        def committed() -> bool:
            return any(
                e.state is UpdateState.COMMITTED and e.to_version > v1 for e in weather.events
            )

        if not wait("retrain_decided", lambda: committed() or self._gate_kept_champion.is_set()):
            return
        if not committed():
            # A correct ending too: the retrained model did not beat the champion and
            # persistence on the same split, so nothing is released and v1 keeps serving.
            self.report.outcome = f"the gate kept v{v1}: the retrained model was not better"
            self.report.ok = True
            return
        new = max(e.to_version for e in weather.events if e.state is UpdateState.COMMITTED)
        self._mark("update_committed")
        if wait("first_prediction_new_version", lambda: weather.predictions[new] > 0):
            self.report.outcome = f"the station serves v{new}"
            self.report.ok = True
        time.sleep(3)  # one more telemetry round and the rollout's final decision

    def _collect(self) -> None:
        if self.timeline is None:
            return
        for device, view in self.timeline.devices.items():
            self.report.versions[device] = sorted(view.predictions)
            ended = [v for v in view.visits if v.phase == "end"]
            if ended:
                labels = ", ".join(f"{k} {n}" for k, n in Counter(v.label for v in ended).items())
                self.report.visits.append(f"{device}: {len(ended)} visits ({labels})")
