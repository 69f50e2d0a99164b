"""Errors raised by the wire contract."""


class ProtocolError(ValueError):
    """A payload, topic or manifest does not follow the wire contract.

    The message names what was wrong in one line, so it can be logged and
    reported back to the sender as it is.
    """


class SignatureError(ProtocolError):
    """A release manifest is unsigned, mis-signed, or was changed after signing."""
