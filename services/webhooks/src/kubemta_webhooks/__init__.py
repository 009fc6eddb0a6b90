"""kubemta webhooks: apps' delivery events pushed to their HTTP endpoints (docs/webhooks.md)."""
