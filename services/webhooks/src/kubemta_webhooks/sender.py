"""Sending: every replica consumes `webhooks` and POSTs each webhook to its endpoint, signed, once per attempt.

An answer 2xx delivers it (the consumer then acknowledges it). 410 Gone says the endpoint does not
want it: it is dropped. Anything else (another status, a redirect, which is never followed, a
timeout, a refused connection, a TLS failure) queues it again, with its attempts counted, to the
retry tier for its attempt (queues.py; the last tier repeats), confirmed before the delivery is
acknowledged; a webhook still failing KUBEMTA_WEBHOOK_MAX_AGE after it was queued is dropped and
counted (`expired`). A retry that the broker does not confirm raises TransientError: the consumer
returns the webhook to `webhooks` and it is sent again (at least once).

What an endpoint answers is hostile: at most `MAX_RESPONSE_BYTES` of the body are read (raw, never
decompressed), the whole request is bounded in time, and nothing of the answer but its status is
logged. The endpoint's URL and secret come from the endpoints file at the time of sending (a changed
secret signs the next attempt); a webhook for an endpoint no longer in the file is dropped (`failed`).
"""

import asyncio
import logging
import time

import httpx

from kubemta.v1 import webhooks_pb2
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.errors import MessageTooLarge, PublishFailed, TransientError
from kubemta_common.timestamps import age_seconds
from kubemta_webhooks import metrics
from kubemta_webhooks.endpoints import Endpoint, EndpointsFile
from kubemta_webhooks.queues import retry_stage
from kubemta_webhooks.signing import signed_headers

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "kubemta-webhooks"
GONE = 410


def new_client(timeout: float, concurrency: int) -> httpx.AsyncClient:
    """The HTTP client of the senders: no redirects, `timeout` to connect and per read, bounded connections."""
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=max(4, concurrency), max_keepalive_connections=max(4, concurrency)),
        headers={"user-agent": USER_AGENT},
    )


def retry_delay(tiers: tuple[float, ...], attempts: int) -> float:
    """The delay after attempt number `attempts` (1 for the first failure); the last tier repeats."""
    return tiers[min(max(attempts, 1), len(tiers)) - 1]


class Sender:
    """The handler of `webhooks`: one POST per delivery, then delivered, dropped or queued for a retry."""

    def __init__(
        self,
        endpoints: EndpointsFile,
        publisher: BusPublisher,
        client: httpx.AsyncClient,
        *,
        tiers: tuple[float, ...],
        max_age: float,
        timeout: float,
    ) -> None:
        self._endpoints = endpoints
        self._publisher = publisher
        self._client = client
        self._tiers = tiers
        self._max_age = max_age
        self._timeout = timeout

    async def handle(self, delivery: webhooks_pb2.WebhookDelivery) -> None:
        """Send one webhook; returns when it is delivered, dropped or confirmed in a retry tier."""
        name = delivery.endpoint
        endpoint = self._endpoints.endpoints.get(name)
        if endpoint is None:
            logger.warning(
                "webhook %s for %s: the endpoint is not in the webhooks file; dropped", delivery.delivery_id, name
            )
            metrics.DELIVERIES.labels(endpoint=name, result="failed").inc()
            return
        status = await self._post(endpoint, delivery)
        if status is not None and 200 <= status < 300:
            metrics.DELIVERIES.labels(endpoint=name, result="delivered").inc()
            logger.info("webhook %s (%s) delivered to %s: %d", delivery.delivery_id, delivery.queue_id, name, status)
            return
        if status == GONE:
            metrics.DELIVERIES.labels(endpoint=name, result="gone").inc()
            logger.warning("webhook %s: %s answered 410 Gone; not retried", delivery.delivery_id, name)
            return
        attempts = delivery.attempts + 1
        if age_seconds(delivery.created) >= self._max_age:
            metrics.DELIVERIES.labels(endpoint=name, result="expired").inc()
            logger.error(
                "webhook %s to %s still failing after %d attempts: dropped", delivery.delivery_id, name, attempts
            )
            return
        retry = webhooks_pb2.WebhookDelivery()
        retry.CopyFrom(delivery)
        retry.attempts = attempts
        delay = retry_delay(self._tiers, attempts)
        try:
            await self._publisher.publish(retry_stage(delay), retry, message_id=delivery.delivery_id)
        except (PublishFailed, MessageTooLarge) as exc:
            raise TransientError(f"could not queue the retry of webhook {delivery.delivery_id}: {exc}") from None
        metrics.DELIVERIES.labels(endpoint=name, result="retried").inc()
        logger.info(
            "webhook %s to %s failed (attempt %d, %s); again in %.0fs",
            delivery.delivery_id,
            name,
            attempts,
            status if status is not None else "no answer",
            delay,
        )

    async def _post(self, endpoint: Endpoint, delivery: webhooks_pb2.WebhookDelivery) -> int | None:
        """POST the payload; the status code, or None when no answer came (timeout, refused, TLS, protocol)."""
        body = delivery.payload
        headers = {"content-type": "application/json", **signed_headers(endpoint.key, delivery.delivery_id, body)}
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout * 3):
                async with self._client.stream("POST", endpoint.url, content=body, headers=headers) as response:
                    await _read_some(response)
                    return response.status_code
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError) as exc:
            logger.info("webhook %s to %s: no answer (%s)", delivery.delivery_id, endpoint.name, type(exc).__name__)
            return None
        finally:
            metrics.DELIVERY_SECONDS.observe(time.monotonic() - started)


async def _read_some(response: httpx.Response) -> None:
    """Read at most MAX_RESPONSE_BYTES of the answer (raw), so the connection can be reused when it was short."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES:
            break
