"""The queue-manager's Prometheus metrics (names from ARCHITECTURE.md; the provider label is bounded).

Deferred and bounced recipients carry a `class` label too: the failure's class
(kubemta_common.bounce_class.BounceClass, a fixed set), so operators see why mail fails by provider.

Recipient outcomes are counted once per result, after the follow-up messages were
confirmed by the broker; a result re-delivered after a crash may be counted twice
(at-least-once).
"""

from prometheus_client import Counter

from kubemta_common.bounce_class import BounceClass
from kubemta_common.final_metrics import QUEUE_TIME as QUEUE_TIME  # re-exported: counted here too
from kubemta_common.final_metrics import RECIPIENTS_DELIVERED as RECIPIENTS_DELIVERED
from kubemta_common.job_metrics import JOBS_CREATED as JOBS_CREATED  # re-exported: counted by the ingress too
from kubemta_common.job_metrics import MESSAGES_SPLIT as MESSAGES_SPLIT
from kubemta_common.metrics import DUPLICATES, preinitialise
from kubemta_common.providers import PROVIDERS

CLASSES: tuple[str, ...] = tuple(found.value for found in BounceClass)
"""The `class` label's values."""

RECIPIENTS_DEFERRED = Counter(
    "kubemta_recipients_deferred_total",
    "Recipient delivery attempts that failed temporarily and were rescheduled, by failure class",
    ["provider", "class"],
)
RECIPIENTS_BOUNCED = Counter(
    "kubemta_recipients_bounced_total",
    "Recipients that failed permanently or expired (final; reported to the sender unless it is <> or NOTIFY says"
    " otherwise), by failure class",
    ["provider", "class"],
)
RECIPIENTS_EXPIRED = Counter(
    "kubemta_recipients_expired_total", "Recipients bounced because they outlived KUBEMTA_MAX_QUEUE_LIFETIME"
)
BOUNCES_SENT = Counter("kubemta_bounces_sent_total", "Failure DSNs (bounces) generated and queued")
DELAY_WARNINGS_SENT = Counter("kubemta_delay_warnings_sent_total", "Delay-warning DSNs generated and queued")
SUCCESS_DSNS_SENT = Counter(
    "kubemta_success_dsns_sent_total", "Success DSNs (NOTIFY=SUCCESS: delivered or relayed) generated and queued"
)
UNDELIVERABLE_NULL_SENDER = Counter(
    "kubemta_undeliverable_null_sender_total",
    "Failure DSNs not sent because the message's sender was <> (or it was itself a DSN); its recipients are dropped",
)
DKIM_SIGNATURES = Counter(
    "kubemta_dkim_signatures_total",
    "DKIM signing of accepted messages: per key, signed or error; once per message, no_from, no_key or untrusted"
    " (algorithm none)",
    ["algorithm", "result"],
)

for _counter in (RECIPIENTS_DEFERRED, RECIPIENTS_BOUNCED):
    preinitialise(_counter, provider=PROVIDERS, **{"class": CLASSES})
preinitialise(DKIM_SIGNATURES, algorithm=("rsa-sha256", "ed25519-sha256"), result=("signed", "error"))
preinitialise(DKIM_SIGNATURES, algorithm=("none",), result=("no_from", "no_key", "error", "untrusted"))


preinitialise(DUPLICATES, stage=["queue-manager"])
