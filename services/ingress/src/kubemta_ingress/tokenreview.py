"""Asking the Kubernetes API whom a ServiceAccount token belongs to: the TokenReview API, off the event loop.

`TokenReviewClient.review(token)` creates a `TokenReview` (`authentication.k8s.io/v1`;
kube-apiserver answers it without storing anything) with the official `kubernetes`
client and `spec.audiences = [audience]`, and accepts the answer only when:

- `status.authenticated` is true,
- `status.user.username` is `system:serviceaccount:NAMESPACE:NAME` with valid names
  (a token of another kind of user cannot stand for a ServiceAccount), and
- `status.audiences` holds our audience. An API server that does not support
  audiences, or a webhook authenticator that ignores them, answers without it; the
  token might then be one minted for another service, which could replay it here.

The client is configured as in a pod (`InClusterConfigLoader`): kubemta's own token from
`token_file`, re-read every minute so a rotated projected token is picked up, the API's
certificate verified against `ca_file`, the API at KUBERNETES_SERVICE_HOST:PORT, or at
`api_url` when that is set (`https://host:port`, the address only). The client is
synchronous, so each review runs on one of `threads` worker threads, with `timeout` as
urllib3's request timeout, one retry (a TokenReview stores nothing, so repeating it is
safe) and an overall asyncio deadline; a review that cannot start on a thread within that
deadline fails too. Whatever goes wrong (API down, slow, 5xx, our own token refused, an
answer that does not parse) raises `TokenReviewUnavailable`: the token is then neither
accepted nor remembered as refused.
"""

import asyncio
import concurrent.futures
import logging
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import urllib3
from kubernetes.client import ApiClient, AuthenticationV1Api, Configuration, V1TokenReview, V1TokenReviewSpec
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import (
    SERVICE_HOST_ENV_NAME,
    SERVICE_PORT_ENV_NAME,
    InClusterConfigLoader,
)

from kubemta_common.errors import ConfigError
from kubemta_common.logs import sanitize
from kubemta_ingress.serviceaccount_identities import ServiceAccount
from kubemta_ingress.serviceaccounts import TokenReviewUnavailable

logger = logging.getLogger(__name__)

DEFAULT_THREADS = 4
DEADLINE_GRACE = 1.0
"""Seconds the overall deadline adds to the request timeout (connection set-up, thread hand-over)."""


def api_environment(api_url: str | None, environ: dict[str, str]) -> dict[str, str]:
    """The KUBERNETES_SERVICE_HOST/PORT the in-cluster loader reads: from `api_url` when set, else `environ`'s."""
    if api_url is None:
        return environ
    parsed = urllib.parse.urlsplit(api_url)
    try:
        port = parsed.port or 443
    except ValueError:
        port = 0
    if parsed.scheme != "https" or not parsed.hostname or not port or parsed.path not in ("", "/") or parsed.query:
        raise ConfigError(
            f"KUBEMTA_KUBERNETES_API_URL {sanitize(api_url)!r}: expected https://HOST[:PORT] (the address only)"
        )
    return {SERVICE_HOST_ENV_NAME: parsed.hostname, SERVICE_PORT_ENV_NAME: str(port)}


def kubernetes_configuration(
    *, api_url: str | None, token_file: Path, ca_file: Path, environ: dict[str, str]
) -> Configuration:
    """The client configuration as in a pod (token re-read as it rotates); ConfigError when it cannot be built."""
    configuration = Configuration()
    loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]  # kubernetes.config has no annotations
        token_filename=str(token_file), cert_filename=str(ca_file), environ=api_environment(api_url, environ)
    )
    try:
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"Kubernetes API client for TokenReview ({token_file}, {ca_file}): {exc}") from None
    configuration.retries = urllib3.Retry(total=1, allowed_methods=None, status=0, redirect=0, raise_on_status=False)
    return configuration


class TokenReviewClient:
    """Reviews tokens with the TokenReview API on a few worker threads; `close()` ends them."""

    def __init__(self, configuration: Configuration, *, audience: str, timeout: float, threads: int = DEFAULT_THREADS):
        self._api_client = ApiClient(configuration)
        self._api = AuthenticationV1Api(self._api_client)
        self._audience = audience
        self._timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenreview")
        self._threads = asyncio.Semaphore(threads)

    async def review(self, token: str) -> ServiceAccount | None:
        """The ServiceAccount `token` authenticates for our audience; None when the API refuses it.

        Raises TokenReviewUnavailable when there is no usable answer within the deadline.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout + DEADLINE_GRACE):
                await self._threads.acquire()
                try:
                    work = self._executor.submit(self._create, token)
                except RuntimeError:  # closed
                    self._threads.release()
                    raise TokenReviewUnavailable("the TokenReview client is closed") from None
                # The thread is given back when the request ends, not when this caller stops waiting for it.
                work.add_done_callback(lambda _: _call_soon(loop, self._threads.release))
                answer = await asyncio.wrap_future(work)
        except TimeoutError:
            raise TokenReviewUnavailable(f"no answer within {self._timeout + DEADLINE_GRACE:.1f} s") from None
        return self._judge(answer)

    def _create(self, token: str) -> V1TokenReview:
        body = V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=V1TokenReviewSpec(token=token, audiences=[self._audience]),
        )
        try:
            answer = self._api.create_token_review(body, _request_timeout=self._timeout)
        except Exception as exc:  # urllib3, TLS, ApiException (4xx/5xx), bad JSON: all mean "no answer"
            raise TokenReviewUnavailable(_describe(exc)) from None
        if not isinstance(answer, V1TokenReview):
            raise TokenReviewUnavailable(f"unexpected answer {type(answer).__name__}")
        return answer

    def _judge(self, answer: V1TokenReview) -> ServiceAccount | None:
        status = answer.status
        if status is None:
            raise TokenReviewUnavailable("the TokenReview answer has no status")
        if not status.authenticated:
            logger.debug("TokenReview refused a token: %s", sanitize(str(status.error or "not authenticated")))
            return None
        username = status.user.username if status.user is not None else None
        account = ServiceAccount.from_username(username) if isinstance(username, str) else None
        if account is None:
            logger.info("TokenReview: the token is not a ServiceAccount's (%s)", sanitize(str(username)))
            return None
        if self._audience not in (status.audiences or ()):
            logger.warning(
                "TokenReview: the token of %s is not bound to the audience %r (answered audiences: %s)",
                account,
                self._audience,
                sanitize(str(status.audiences)),
            )
            return None
        return account

    async def close(self) -> None:
        """Stop the worker threads (a review still running finishes first) and the connection pool."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._api_client.close()  # type: ignore[no-untyped-call]


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop is closed: nobody waits for a thread any more
        pass


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if isinstance(status, int):
        return f"the API answered {status} {sanitize(str(reason))}"
    return sanitize(f"{type(exc).__name__}: {exc}")[:300]
