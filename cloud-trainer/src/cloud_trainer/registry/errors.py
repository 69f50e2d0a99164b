"""Registry failures, distinct so callers can tell a missing model from a broken store."""


class RegistryError(Exception):
    """The registry could not do what was asked (store unreachable, model unreadable)."""


class ModelNotFoundError(RegistryError):
    """The model reference (path, version or alias) points at nothing."""
