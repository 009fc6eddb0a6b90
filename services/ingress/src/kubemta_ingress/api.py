"""The ingress HTTP API (KUBEMTA_HTTP_LISTEN): the domain check for operators and controllers.

    GET /v1/domains/{domain}/check  ->  200 and the DomainReport as JSON, also when records are
                                        missing or wrong (`ok` and each check's `status` say so);
                                        422 {"detail": "invalid domain name: ..."} for a bad name.

Served by `kubemta_common.http_server.HttpServer` in the ingress' event loop, beside the
SMTP listeners. Errors are JSON, never a traceback. The API has no authentication: it is
on loopback by default, and the chart puts it on a ClusterIP Service behind a
NetworkPolicy. `kubemta_domain_checks_total{result}` counts the checks served.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from kubemta_common.domain_check import CheckConfig, DomainReport, InvalidDomainError, Resolver, Status, check_domain
from kubemta_common.metrics import preinitialise

logger = logging.getLogger(__name__)

DOMAIN_CHECKS = Counter(
    "kubemta_domain_checks_total",
    "Domain checks served by the HTTP API, by result: ok (every check ok), problems, invalid (bad domain name)",
    ["result"],
)
preinitialise(DOMAIN_CHECKS, result=["ok", "problems", "invalid"])


def create_app(config: CheckConfig, resolver: Resolver) -> FastAPI:
    """The API application, checking domains against `config` through `resolver`."""
    app = FastAPI(title="kubemta ingress API", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so the server logs the traceback; the client gets JSON
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get(
        "/v1/domains/{domain}/check",
        response_model=DomainReport,
        responses={422: {"description": "Not a valid domain name"}},
    )
    async def check(domain: str) -> DomainReport | JSONResponse:
        try:
            report = await check_domain(domain, config, resolver)
        except InvalidDomainError as exc:
            DOMAIN_CHECKS.labels(result="invalid").inc()
            return JSONResponse({"detail": f"invalid domain name: {exc}"}, status_code=422)
        DOMAIN_CHECKS.labels(result="ok" if report.ok else "problems").inc()
        problems = [f"{c.name} {c.status.value}" for c in report.checks if c.status is not Status.OK]
        logger.info("domain check of %s: %s", report.domain, ", ".join(problems) or "ok", extra={"queue_id": None})
        return report

    return app
