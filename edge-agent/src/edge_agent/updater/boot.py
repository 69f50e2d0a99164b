"""Choosing the model to serve at start-up, so a restart after any crash serves a valid one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edge_agent.inference import InferenceEngine, ModelLoadError
from edge_agent.updater.checks import file_sha256
from edge_agent.updater.errors import StoreError, UpdateError
from edge_agent.updater.state import (
    POST_ACTIVATION,
    ModelRecord,
    StateCorrupt,
    StateStore,
    UpdaterState,
)
from edge_agent.updater.store import ModelStore

log = logging.getLogger(__name__)


class BootError(UpdateError):
    """No stored version loads and no provisioned model was given: nothing can serve."""


@dataclass(frozen=True)
class ProvisionedModel:
    """The model file a device is provisioned with, used when the store is still empty."""

    path: Path
    version: int


def load_stored(store: ModelStore, record: ModelRecord, threads: int) -> InferenceEngine | None:
    path = store.path_of(record)
    if not path.is_file():
        log.warning("stored version %s is missing (%s)", record.version, path.name)
        return None
    try:
        engine = InferenceEngine.load(path, threads)
    except ModelLoadError as e:
        log.error("stored version %s does not load: %s", record.version, e.problem)
        return None
    if engine.sha256 != record.sha256:
        log.error("stored version %s is corrupt (sha256 %s)", record.version, engine.sha256[:12])
        return None
    return engine


def _initial_state(states: StateStore, store: ModelStore, model: str) -> UpdaterState:
    try:
        state = states.load()
    except StateCorrupt as e:
        log.error("%s; rebuilding the state from the active pointer", e)
        state = None
    try:
        pointer = store.read_pointer()
    except StoreError as e:
        log.error("%s; falling back to the recorded versions", e)
        pointer = None
    if state is None:
        return UpdaterState(model=model, active=pointer)
    if state.phase not in POST_ACTIVATION and pointer is not None and pointer != state.active:
        # Only a crash between the pointer write and the state write can cause this; the
        # pointer is what was about to serve, the state's active version stays a fallback.
        previous = [r for r in [state.active, *state.previous] if r is not None and r != pointer]
        return state.model_copy(update={"active": pointer, "previous": previous})
    return state


def boot_engine(
    store: ModelStore,
    states: StateStore,
    model: str,
    threads: int,
    provisioned: ProvisionedModel | None = None,
) -> tuple[InferenceEngine, UpdaterState]:
    """Load the committed version (or the newest earlier one that still loads).

    A version on probation when the process died is never booted: the pointer is put
    back to the committed one before anything serves, and the updater reports the rollback.
    """
    state = _initial_state(states, store, model)
    candidates = [r for r in [state.active, *state.previous] if r is not None]
    for record in candidates:
        engine = load_stored(store, record, threads)
        if engine is None:
            continue
        if record != state.active:
            previous = [r for r in state.previous if r != record]
            state = state.model_copy(update={"active": record, "previous": previous})
        if store.read_pointer_quietly() != record:
            store.write_pointer(record)
        states.save(state)
        return engine, state
    if provisioned is None:
        raise BootError(f"no stored version of {model} loads and no provisioned model was given")
    sha, _size = file_sha256(provisioned.path)
    record = store.adopt(provisioned.path, model, provisioned.version, sha)
    try:
        engine = InferenceEngine.load(store.path_of(record), threads)
    except ModelLoadError as e:
        raise BootError(f"provisioned model {provisioned.path} does not load: {e.problem}") from e
    store.write_pointer(record)
    state = state.model_copy(update={"active": record})
    states.save(state)
    log.info("adopted provisioned model %s version %s", model, provisioned.version)
    return engine, state
