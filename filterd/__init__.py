"""filterd: a neural spam filter that a mail server plugs in as an SMTP content filter."""

__version__ = "0.1.0"
