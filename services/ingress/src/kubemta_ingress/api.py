"""The ingress HTTP API (KUBEMTA_HTTP_LISTEN): sending mail for apps, the domain check for operators.

    POST /v1/messages               ->  202 and the queue id (api_send.py: apps with an API key or a
                                        ServiceAccount token)
    GET /openapi.json               ->  the OpenAPI document (no token needed)
    GET /v1/domains/{domain}/check  ->  200 and the DomainReport as JSON, also when records are
                                        missing or wrong (`ok` and each check's `status` say so);
                                        a cached report carries `Age` (RFC 9111 §5.1);
                                        401 + WWW-Authenticate: Bearer without the right token;
                                        403 for a token other than the operator's (KUBEMTA_API_TOKEN);
                                        422 {"detail": "invalid domain name: ..."} for a bad name;
                                        429 + Retry-After over the rate or concurrency limit;
                                        503 when no API token is configured (the API is closed);
                                        504 when the check takes longer than KUBEMTA_API_CHECK_TIMEOUT.

Every /v1 route depends on `BearerAuth` (api_auth.py: `Authorization: Bearer <token>`, the
operator's KUBEMTA_API_TOKEN, an API key or a ServiceAccount token); the checks go through
`CheckService` (check_service.py: cache, single flight, rate and concurrency limits,
deadline). Request bodies are bounded before routing and authentication (BodyLimit:
KUBEMTA_API_MAX_REQUEST_SIZE, 413; KUBEMTA_API_REQUEST_TIMEOUT, 408). Served by
`kubemta_common.http_server.HttpServer` in the ingress' event loop, beside the SMTP
listeners. Errors are JSON `{"detail": ...}`, never a traceback.
`kubemta_domain_checks_total{result}` counts every /v1 check request by outcome.
"""

import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubemta_common.http_body_limit import BodyLimit
from kubemta_common.metrics import preinitialise
from kubemta_ingress import metrics
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.api_auth import (
    BearerAuth,
    NotConfigured,
    Principal,
    StaticTokenVerifier,
    TokenVerifier,
    Unauthorized,
)
from kubemta_ingress.api_limits import LimitExceeded
from kubemta_ingress.api_message_model import MessageRequest
from kubemta_ingress.api_send import SendingApi, sending_router
from kubemta_ingress.check_service import CheckLimits, CheckService, CheckTimeout, Source
from kubemta_ingress.data_budget import DataBudget
from kubemta_ingress.domain_check_config import check_config, check_resolver
from kubemta_ingress.idempotency import Idempotency
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


REQUEST_REFUSALS = Counter(
    "kubemta_api_refused_requests_total",
    "HTTP API requests refused before routing: body too large (413), too slow to arrive (408), or no room for it in "
    "KUBEMTA_MESSAGE_DATA_BUDGET, which the SMTP sessions share (503)",
    ["reason"],
)
preinitialise(REQUEST_REFUSALS, reason=["too_large", "too_slow", "no_room"])
DOMAIN_CHECK_PATH = "/v1/domains/"


class ApiBodyLimit(BodyLimit):
    """BodyLimit counting its refusals in `kubemta_api_refused_requests_total`."""

    def refused(self, reason: str) -> None:
        REQUEST_REFUSALS.labels(reason=reason).inc()


def operator_only(auth: BearerAuth) -> Any:
    """A dependency admitting only the operator's KUBEMTA_API_TOKEN (403 for an app's credential)."""

    async def operator(principal: Annotated[Principal, Depends(auth)]) -> Principal:
        if principal.kind != StaticTokenVerifier.PRINCIPAL.kind:
            raise HTTPException(status_code=403, detail="the domain check needs the operator's KUBEMTA_API_TOKEN")
        return principal

    return operator


def create_app(
    service: CheckService,
    auth: BearerAuth,
    sending: SendingApi | None = None,
    *,
    max_request: int = 64 * 1024,
    request_timeout: float = 30.0,
    budget: DataBudget | None = None,
) -> FastAPI:
    """The API application: domain checks through `service`, mail through `sending` (None: no sending
    route), callers authenticated by `auth`; request bodies of at most `max_request` bytes arriving within
    `request_timeout` seconds, held only while `budget` (the SMTP sessions' own) has room."""
    app = FastAPI(
        title="kubemta ingress API",
        summary="Send mail from in-cluster apps; check a sending domain's DNS records",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.add_middleware(ApiBodyLimit, max_body=max_request, timeout=request_timeout, budget=budget)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(DOMAIN_CHECK_PATH):
            if isinstance(exc, Unauthorized):
                DOMAIN_CHECKS.labels(result="unauthorized").inc()
            elif isinstance(exc, NotConfigured):
                DOMAIN_CHECKS.labels(result="closed").inc()
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if not request.url.path.startswith(DOMAIN_CHECK_PATH):
            metrics.API_MESSAGES.labels(result="invalid").inc()
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so the server logs the traceback; the client gets JSON
        return JSONResponse({"detail": "internal error"}, status_code=500)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(operator_only(auth))])

    @v1.get(
        "/domains/{domain}/check",
        response_model=DomainReport,
        responses={
            401: {"description": "No or a wrong bearer token"},
            403: {"description": "A token other than the operator's"},
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
    if sending is not None:
        app.include_router(sending_router(sending, auth, max_request))
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, built once: FastAPI's, with the JSON message model (MessageRequest) among the
    schemas (the sending route reads its body itself, to take message/rfc822 too, so FastAPI does not see it)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version="1", summary=app.summary, routes=app.routes)
        model = MessageRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(model.pop("$defs", {}))
        schemas["MessageRequest"] = model
        app.openapi_schema = document
    return app.openapi_schema


def app_from_settings(
    settings: IngressSettings,
    acceptance: MailAcceptance | None = None,
    *,
    verifiers: Sequence[TokenVerifier] = (),
    idempotency: Idempotency | None = None,
    budget: DataBudget | None = None,
) -> FastAPI:
    """The API as the service runs it: the operator's `KUBEMTA_API_TOKEN` and the apps' `verifiers` (API keys,
    ServiceAccount tokens), the `KUBEMTA_API_*` limits, the domain check's settings; POST /v1/messages through
    `acceptance` (the SMTP listeners' own) when given, with Idempotency-Keys through `idempotency`, request
    bodies held within `budget` (KUBEMTA_MESSAGE_DATA_BUDGET, shared with the SMTP sessions)."""
    static = [StaticTokenVerifier(settings.api_token)] if settings.api_token is not None else []
    auth = BearerAuth([*static, *verifiers])
    if not auth.configured:
        logger.warning(
            "no API token, API keys or ServiceAccount identities are configured: the HTTP API refuses every "
            "request (503)",
        )
    service = CheckService(check_config(settings), check_resolver(settings), CheckLimits.from_settings(settings))
    sending = SendingApi(acceptance, idempotency) if acceptance is not None else None
    return create_app(
        service,
        auth,
        sending,
        max_request=settings.api_request_limit,
        request_timeout=settings.api_request_timeout,
        budget=budget,
    )
