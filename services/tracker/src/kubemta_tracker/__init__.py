"""kubemta tracker: the index of the lifecycle event stream and the tracking and queue administration API."""
