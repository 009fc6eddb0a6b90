"""The ingress HTTP API (KUBEMTA_HTTP_LISTEN): the domain check for operators and controllers.

    GET /v1/domains/{domain}/check  ->  200 and the DomainReport as JSON, also when records are
                                        missing or wrong (`ok` and each check's `status` say so);
                                        a cached report carries `Age` (RFC 9111 §5.1);
                                        401 + WWW-Authenticate: Bearer without the right token;
                                        422 {"detail": "invalid domain name: ..."} for a bad name;
                                        429 + Retry-After over the rate or concurrency limit;
                                        503 when no API token is configured (the API is closed);
                                        504 when the check takes longer than KUBEMTA_API_CHECK_TIMEOUT.

Every /v1 route depends on `BearerAuth` (api_auth.py: `Authorization: Bearer
<KUBEMTA_API_TOKEN>`); the checks go through `CheckService` (check_service.py: cache,
single flight, rate and concurrency limits, deadline). Served by
`kubemta_common.http_server.HttpServer` in the ingress' event loop, beside the SMTP
listeners. Errors are JSON `{"detail": ...}`, never a traceback.
`kubemta_domain_checks_total{result}` counts every /v1 check request by outcome.
"""

import logging

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubemta_common.metrics import preinitialise
from kubemta_ingress.api_auth import BearerAuth, NotConfigured, Unauthorized
from kubemta_ingress.api_limits import LimitExceeded
from kubemta_ingress.check_service import CheckLimits, CheckService, CheckTimeout, Source
from kubemta_ingress.domain_check_config import check_config, check_resolver
from kubemta_ingress.settings import IngressSettings
from kubemta_mail_auth.domain_check import DomainReport, InvalidDomainError, Status

logger = logging.getLogger(__name__)

DOMAIN_CHECKS = Counter(
    "kubemta_domain_checks_total",
    "Domain check requests to the HTTP API, by result: ok (a new check, every check ok), problems (a new check "
    "with something to fix), cached (answered from the cache or a check already running: no DNS look-up), invalid "
    "(bad domain name), unauthorized (no or a wrong token), closed (no token configured), rate_limited, busy "
    "(every check slot taken), timeout (the check passed KUBEMTA_API_CHECK_TIMEOUT)",
    ["result"],
)
RESULTS = ("ok", "problems", "cached", "invalid", "unauthorized", "closed", "rate_limited", "busy", "timeout")
preinitialise(DOMAIN_CHECKS, result=RESULTS)


def create_app(service: CheckService, auth: BearerAuth) -> FastAPI:
    """The API application: domain checks through `service`, callers authenticated by `auth`."""
    app = FastAPI(title="kubemta ingress API", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, Unauthorized):
            DOMAIN_CHECKS.labels(result="unauthorized").inc()
        elif isinstance(exc, NotConfigured):
            DOMAIN_CHECKS.labels(result="closed").inc()
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so the server logs the traceback; the client gets JSON
        return JSONResponse({"detail": "internal error"}, status_code=500)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth)])

    @v1.get(
        "/domains/{domain}/check",
        response_model=DomainReport,
        responses={
            401: {"description": "No or a wrong bearer token"},
            422: {"description": "Not a valid domain name"},
            429: {"description": "Too many checks: retry after Retry-After seconds"},
            503: {"description": "No API token is configured"},
            504: {"description": "The check took longer than KUBEMTA_API_CHECK_TIMEOUT"},
        },
    )
    async def check(domain: str) -> DomainReport | JSONResponse:
        try:
            answer = await service.report(domain)
        except InvalidDomainError as exc:
            DOMAIN_CHECKS.labels(result="invalid").inc()
            return JSONResponse({"detail": f"invalid domain name: {exc}"}, status_code=422)
        except LimitExceeded as exc:
            DOMAIN_CHECKS.labels(result=exc.reason).inc()
            return JSONResponse({"detail": exc.detail}, status_code=429, headers={"Retry-After": str(exc.retry_after)})
        except CheckTimeout as exc:
            DOMAIN_CHECKS.labels(result="timeout").inc()
            logger.warning("domain check of %s timed out", exc.domain)
            return JSONResponse({"detail": str(exc)}, status_code=504)
        report = answer.report
        if answer.source is not Source.CHECKED:
            DOMAIN_CHECKS.labels(result="cached").inc()
            return JSONResponse(report.model_dump(mode="json"), headers={"Age": str(int(answer.age))})
        DOMAIN_CHECKS.labels(result="ok" if report.ok else "problems").inc()
        problems = [f"{c.name} {c.status.value}" for c in report.checks if c.status is not Status.OK]
        logger.info("domain check of %s: %s", report.domain, ", ".join(problems) or "ok")
        return report

    app.include_router(v1)
    return app


def app_from_settings(settings: IngressSettings) -> FastAPI:
    """The API as the service runs it: `KUBEMTA_API_TOKEN`, the `KUBEMTA_API_*` limits, the domain check's settings."""
    auth = BearerAuth.from_token(settings.api_token)
    if not auth.configured:
        logger.warning(
            "KUBEMTA_API_TOKEN is not set: the HTTP API refuses every request (503) until a token is configured",
        )
    service = CheckService(check_config(settings), check_resolver(settings), CheckLimits.from_settings(settings))
    return create_app(service, auth)
