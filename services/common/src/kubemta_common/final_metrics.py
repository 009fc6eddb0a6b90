"""The metrics of a recipient's final outcome that two services count: the queue-manager (a job it decided) and the
delivery worker (a job delivered everywhere that ends there, with no result to decide). One definition, so the two
series have the same name, help, labels and buckets, and a process importing both services' metrics (the dashboard
test) registers them once. Queries sum over both services."""

from prometheus_client import Counter, Histogram

from kubemta_common.metrics import preinitialise
from kubemta_common.providers import PROVIDERS

RECIPIENTS_DELIVERED = Counter("kubemta_recipients_delivered_total", "Recipients delivered (final)", ["provider"])
QUEUE_TIME = Histogram(
    "kubemta_queue_time_seconds",
    "Time from acceptance to a recipient's final outcome (delivered or bounced)",
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600, 432000, 864000),
)

preinitialise(RECIPIENTS_DELIVERED, provider=PROVIDERS)
