"""kubemta ingress service."""
