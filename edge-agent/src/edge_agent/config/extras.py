"""Optional parts of the install a config needs: OpenCV comes only with ``edge-agent[camera]``."""

# A weather station never touches an image, and OpenCV costs it ~150 MB on disk and ~16 MiB
# of resident memory once imported. So OpenCV is an extra, every module that uses it is
# imported only on a camera's path, and a camera config on an install without it stops at
# start with the line below instead of an ImportError from deep inside.

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

from edge_agent.protocol.messages import DeviceKind

if TYPE_CHECKING:
    from edge_agent.config.device import DeviceConfig

CAMERA_EXTRA = "edge-agent[camera]"
INSTALL_CAMERA = "pip install 'edge-agent[camera]'"


class ExtraMissing(Exception):
    """Part of the agent needs an optional dependency that this install lacks."""


def opencv_installed() -> bool:
    """Whether OpenCV can be found, without importing it."""
    return importlib.util.find_spec("cv2") is not None


def opencv_missing(what: str) -> ExtraMissing:
    return ExtraMissing(
        f"{what} needs OpenCV, which comes with {CAMERA_EXTRA} and is not installed here: "
        f"{INSTALL_CAMERA}"
    )


def require_opencv(what: str) -> None:
    """Import OpenCV now, or raise ExtraMissing naming the extra that brings it."""
    if sys.modules.get("cv2") is not None:
        return
    if not opencv_installed():
        raise opencv_missing(what)
    try:
        importlib.import_module("cv2")
    except ImportError as e:  # installed but broken (a missing system library, say)
        raise ExtraMissing(f"{what} needs OpenCV, which is installed but does not load: {e}") from e


def opencv_user(config: DeviceConfig) -> str | None:
    """What in this config needs OpenCV, or None when nothing does."""
    if config.source.type == "camera":
        return "the camera source"
    if config.kind is DeviceKind.CAMERA:
        return "a camera device (image model, visits)"
    return None


def missing_extras(config: DeviceConfig) -> list[str]:
    """One line per optional dependency the config needs and this install lacks."""
    user = opencv_user(config)
    if user is not None and not opencv_installed():
        return [str(opencv_missing(user))]
    return []
