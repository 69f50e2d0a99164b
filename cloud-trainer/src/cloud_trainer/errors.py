"""The one user-facing error type of the cloud CLI."""


class UserError(Exception):
    """Something the user can fix (bad data, bad arguments, missing files): one line, no traceback.

    ``exit_code`` is 1 for a failed job and 2 for bad input or configuration.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
