"""kubemta delivery-worker service."""
