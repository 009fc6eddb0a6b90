"""Lifecycle events (proto/kubemta/v1/events.proto): publishing them to the `events` stream
(emitter.py), reading streams (stream_reader.py), operators' decisions (decisions.py) and the
tracker's duplicate checks (tracker_client.py)."""
