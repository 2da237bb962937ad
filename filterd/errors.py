"""The small exception hierarchy every filterd module raises from."""


class FilterdError(Exception):
    """Base of all errors filterd raises on purpose."""


class ConfigError(FilterdError):
    """The configuration is invalid; the message names the offending key path."""


class ModelError(FilterdError):
    """The model artifact is missing, corrupt, or cannot be run."""


class RelayError(FilterdError):
    """The next hop did not accept a message."""
