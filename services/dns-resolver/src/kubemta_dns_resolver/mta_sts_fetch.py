"""Fetching an MTA-STS policy over HTTPS (RFC 8461 §3.3) with httpx.

`GET https://mta-sts.<domain>/.well-known/mta-sts.txt`, where:
- the certificate must be valid for `mta-sts.<domain>` (chain to a trusted CA and the
  name; the CA bundle is KUBEMTA_MTA_STS_CA_FILE or the system's);
- redirects are not followed and no HTTP cache is used (§3.3): only a 200 answer counts;
- the answer must be `text/plain` (§3.2) and at most `MAX_POLICY_BYTES` long, and the
  whole fetch is bounded in time (§3.3 lets senders bound both);
- the body is asked for and taken only without a content coding (`Accept-Encoding:
  identity`): a compressed answer is a failed fetch, so neither a broken gzip stream nor a
  decompression bomb can reach the resolver. Any failure of a fetch, of whatever kind, is
  a `PolicyFetchError` (RFC 8461 §5: the sender then acts as if there were no new policy).

The policy host is resolved through the resolver's own DNS (KUBEMTA_DNS_NAMESERVERS),
like the MX hosts, and the connection goes to that address with SNI, Host header and
certificate check all naming `mta-sts.<domain>`. No proxy settings from the
environment are used.
"""

import asyncio
import ssl
from typing import Protocol

import httpx

from kubemta_dns_resolver.lookup import AddressType, LookupResult, LookupStatus
from kubemta_dns_resolver.mta_sts import PolicyFetchError

WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.2
POLICY_HOST_PREFIX = "mta-sts."
HTTPS_PORT = 443
MAX_POLICY_BYTES = 64 * 1024
"""Largest policy body accepted (RFC 8461 §3.3 suggests a limit; 64 KiB as common MTAs use)."""
MEDIA_TYPE = "text/plain"
IDENTITY = "identity"  # RFC 9110 §12.5.3: no content coding


class AddressLookup(Protocol):
    """What the fetcher needs from lookup.DnspythonLookup."""

    async def addresses(self, name: str, rdtype: AddressType) -> LookupResult[str]:
        """The A or AAAA addresses of `name`."""
        ...


def policy_tls_context(ca_file: str = "") -> ssl.SSLContext:
    """A verifying client context: the given CA bundle, or the system's trusted CAs."""
    return ssl.create_default_context(cafile=ca_file or None)


class HttpsPolicyFetcher:
    """Fetches policy bodies; a fresh connection per fetch (fetches are rare: once per policy id or max_age)."""

    def __init__(
        self,
        lookup: AddressLookup,
        *,
        port: int = HTTPS_PORT,
        ca_file: str = "",
        timeout: float = 10.0,
        max_bytes: int = MAX_POLICY_BYTES,
    ) -> None:
        self._lookup = lookup
        self._port = port
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._tls_context = policy_tls_context(ca_file)

    async def fetch(self, domain: str) -> str:
        host = POLICY_HOST_PREFIX + domain
        try:
            async with asyncio.timeout(self._timeout):
                addresses = await self._addresses(host)
                errors: list[str] = []
                async with httpx.AsyncClient(
                    verify=self._tls_context, follow_redirects=False, timeout=self._timeout, trust_env=False
                ) as client:
                    for address in addresses:
                        try:
                            return await self._get(client, host, address)
                        except httpx.TransportError as exc:  # connection-level: try the next address
                            errors.append(f"{address}: {_describe(exc)}")
                        except httpx.HTTPError as exc:  # anything else httpx finds wrong with the answer
                            raise PolicyFetchError(f"https://{host}{WELL_KNOWN_PATH}: {_describe(exc)}") from None
                raise PolicyFetchError(f"cannot fetch https://{host}{WELL_KNOWN_PATH}: " + "; ".join(errors))
        except TimeoutError:
            raise PolicyFetchError(f"fetching https://{host}{WELL_KNOWN_PATH} timed out") from None

    async def _addresses(self, host: str) -> list[str]:
        found: list[str] = []
        statuses: list[LookupResult[str]] = []
        rdtypes: tuple[AddressType, ...] = ("A", "AAAA")
        for rdtype in rdtypes:
            result = await self._lookup.addresses(host, rdtype)
            statuses.append(result)
            if result.status is LookupStatus.OK:
                found.extend(result.records)
        if not found:
            details = "; ".join(result.detail or result.status.value for result in statuses)
            raise PolicyFetchError(f"policy host {host} has no address: {details}")
        return found

    async def _get(self, client: httpx.AsyncClient, host: str, address: str) -> str:
        url = httpx.URL(scheme="https", host=address, port=self._port, path=WELL_KNOWN_PATH)
        host_header = host if self._port == HTTPS_PORT else f"{host}:{self._port}"
        request = client.build_request(
            "GET",
            url,
            headers={"Host": host_header, "Accept": MEDIA_TYPE, "Accept-Encoding": IDENTITY},
            extensions={"sni_hostname": host},
        )
        response = await client.send(request, stream=True)
        try:
            if response.status_code != httpx.codes.OK:
                raise PolicyFetchError(f"https://{host}{WELL_KNOWN_PATH} answered HTTP {response.status_code}")
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != MEDIA_TYPE:
                what = media_type or "untyped"
                raise PolicyFetchError(f"https://{host}{WELL_KNOWN_PATH} is {what}, not {MEDIA_TYPE}")
            coding = response.headers.get("content-encoding", IDENTITY).strip().lower()
            if coding != IDENTITY:
                raise PolicyFetchError(f"https://{host}{WELL_KNOWN_PATH} came with content coding {coding!r}")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self._max_bytes:
                    raise PolicyFetchError(f"https://{host}{WELL_KNOWN_PATH} is larger than {self._max_bytes} bytes")
        finally:
            await response.aclose()
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyFetchError(f"https://{host}{WELL_KNOWN_PATH} is not UTF-8 text: {exc}") from None


def _describe(exc: httpx.HTTPError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate not valid: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
