"""Typed failures of an update; each names what was wrong so the event can say it."""

from __future__ import annotations


class UpdateError(Exception):
    """Base of every reason an update did not go through."""


class DownloadError(UpdateError):
    """The file could not be fetched; ``retryable`` says whether another try may succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class DownloadCancelled(UpdateError):
    """A newer release or a stop request ended the download; this is not a failure."""


class StoreError(UpdateError):
    """The models folder cannot hold what was asked (no room, unreadable pointer)."""


class DiskBudgetExceeded(StoreError):
    """A model would not fit in the disk budget even after pruning every unprotected version."""


class VerificationError(UpdateError):
    """The downloaded file is not the release: wrong hash, not loadable, wrong contract."""


class SmokeTestError(UpdateError):
    """The candidate loaded but failed on sample inputs (non-finite output, too slow)."""


class ProbationFailed(UpdateError):
    """The activated model misbehaved on live inputs and was rolled back."""
