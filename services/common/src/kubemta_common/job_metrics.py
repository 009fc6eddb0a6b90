"""The metrics of splitting accepted messages into delivery jobs, which two services count: the queue-manager (a
message it took from `inbound`) and the ingress (a message whose one job it queued straight to `deliver`:
kubemta_ingress.direct_jobs). One definition, so both series have the same name and help; queries sum over both
services."""

from prometheus_client import Counter

JOBS_CREATED = Counter("kubemta_jobs_created_total", "Delivery jobs created by splitting accepted messages")
MESSAGES_SPLIT = Counter("kubemta_messages_split_total", "Accepted messages split into delivery jobs")
