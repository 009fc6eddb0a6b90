"""The chaos run of issue 14 (`make chaos`, `python -m bench.chaos`): no mail lost, few duplicates, after crashes.

SMTP clients send messages with unique Message-IDs to the kubemta services (processes, on a
RabbitMQ node of the run's own) and retry a message like a real client until it gets a 250;
meanwhile services are killed with SIGKILL and restarted, and the broker is restarted. A sink
on loopback counts every message that reached it by Message-ID. The report: accepted,
delivered, lost (accepted, never delivered: must be 0) and duplicates (deliveries beyond the
first). `--kill-one SERVICE` (or `--each`): 200 messages, one SIGKILL of that service while
they are in flight.
"""
