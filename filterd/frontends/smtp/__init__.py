"""The SMTP proxy front-end: smtpd (aiosmtpd subclass), handler (hooks), relay (next hop)."""
