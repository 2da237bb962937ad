"""The front-ends: the SMTP proxy (smtp/), the milter and spamd, each an adapter from its protocol onto scan()."""
