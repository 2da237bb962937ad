"""The service: daemon (listeners, drain, signals, reload), supervisor (workers), notify, metrics, log."""
