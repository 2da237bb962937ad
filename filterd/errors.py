"""The small exception hierarchy every filterd module raises from.

There is no RelayError: next-hop trouble is never raised past relay.py, it becomes the
451 reply the MTA retries on (relay.Transaction returns replies, it does not raise).
"""


class FilterdError(Exception):
    """Base of all errors filterd raises on purpose."""


class ConfigError(FilterdError):
    """The configuration is invalid; the message names the offending key path."""


class ModelError(FilterdError):
    """The model artifact is missing, corrupt, or cannot be run."""

    key = "model.path"     # the config key a ConfigError about it names


class DeviceError(ModelError):
    """The device asked for (model.device) is not there, e.g. cuda without CUDA."""

    key = "model.device"
