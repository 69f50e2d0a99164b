"""Governance failures, distinct so the CLI and the API can answer each one precisely."""


class GovernanceError(Exception):
    """A governance job cannot be done; the message names what was wrong."""


class VersionNotFoundError(GovernanceError):
    """The model version asked for is not in the registry."""


class AnalysisDataError(GovernanceError):
    """The data an analysis needs is missing, unreadable or not the data the run trained on."""


class LabellingError(GovernanceError):
    """A labelling request names an unknown sample, a bad label or an unreadable file."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code
