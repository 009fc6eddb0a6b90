"""kubemta queue-manager service."""
