"""kubemta dns-resolver service."""
