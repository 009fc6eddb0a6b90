"""kubemta's benchmark (`make bench`, `python -m bench`): kubemta, Postfix and the smtp-sink ceiling side by side.

Every system gets the same workload from Postfix's `smtp-source` and delivers to Postfix's
`smtp-sink` on loopback addresses of this run; an own small SMTP client samples the accept
latency and, with the sink's per-message dump files, the end-to-end latency. `kubemta-api`
is kubemta loaded through its HTTP sending API by bench.api_source instead. A second
scenario holds idle SMTP sessions open against the kubemta ingress and reports its memory.
`python -m bench.stages` measures each stage alone (1 and 2 processes) and the broker's own
limit, for docs/scale.md; `python -m bench.broker_profile` splits the broker's CPU per message by its
processes (channels per service, each queue, the write-ahead log, the stream writer).
See the "Benchmark" section of the repository README for the figures and how they are measured.
"""
