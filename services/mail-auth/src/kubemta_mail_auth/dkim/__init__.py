"""DKIM keys shared by the signer (queue-manager) and the domain check (ingress API, CLI)."""
