"""A loopback stand-in for the Kubernetes API's TokenReview endpoint, over HTTPS with a test CA.

There is no cluster here. kube-apiserver verifies a ServiceAccount token's signature with
its signing key and looks the account up; this fake knows only the tokens a test minted
with `mint(...)` and answers from that table, in kube-apiserver's shape:

    api = FakeKubeApi.start(tmp_path)          # HTTPS on 127.0.0.1:<free port>, a fresh test CA
    token = api.mint("apps", "mailer", audiences=["kubemta"], lifetime=3600)
    # the client under test: KUBEMTA_KUBERNETES_API_URL=api.url, token file api.caller_token_file,
    # CA file api.ca_file
    api.reviews                                # TokenReviews answered so far
    api.slow = 3.0 / api.fail_with = 500 / api.stop()

or the `kube_api` fixture: `from tests.harness.fake_kube_api import kube_api` in a test module.

`POST /apis/authentication.k8s.io/v1/tokenreviews` needs the caller's own bearer token (the
content of `caller_token_file`, or any token in `caller_tokens`; `401` otherwise, as the API
answers an unauthenticated request). It reads `spec.token` and `spec.audiences` and answers
`201` with `status` as kube-apiserver fills it (k8s.io/apiserver pkg/authentication and
pkg/registry/authentication/tokenreview): `authenticated`, `user.username`
(`system:serviceaccount:NS:NAME`), `user.uid`, `user.groups`, `audiences` (those of the
request the token is bound to; with no `spec.audiences`, the API's own default audience),
and `error` for an unknown, expired or wrongly bound token. `ignore_audiences = True` plays
an authenticator that ignores audiences and answers without `status.audiences`.

Minted tokens are JWT-shaped (`header.payload.signature`, base64url; the payload holds `exp`,
`aud`, `sub`, `iat`, `iss`) so the client's cache can read `exp`; the signature is random
bytes, and only this table makes a token valid. `padding` makes a token larger (a real one
with many claims is 1-2 KiB). The server runs on its own thread, so it answers whatever
the test's event loop is doing; `slow` delays answers (bounded: `stop` cuts the waits short).
"""

import base64
import json
import secrets
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.harness.ports import free_port
from tests.harness.tls_ca import TestCa

PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCE = ISSUER
"""kube-apiserver's own audience (--api-audiences defaults to the issuer): a token without an explicit one has it."""
MAX_BODY = 1024 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class MintedToken:
    """What the fake knows about one token it minted."""

    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    expires: float  # seconds since the epoch


@dataclass
class FakeKubeApi:
    """The fake API: its address and CA, the tokens it knows, its behaviour switches and its counters."""

    host: str
    port: int
    ca_file: Path
    caller_token_file: Path
    caller_tokens: set[str] = field(default_factory=set)
    tokens: dict[str, MintedToken] = field(default_factory=dict)
    reviews: int = 0
    """TokenReviews answered (any answer with a status, 201)."""
    requests: int = 0
    """Requests received, whatever the answer."""
    slow: float = 0.0
    """Seconds to wait before answering."""
    fail_with: int | None = None
    """Answer every review with this HTTP status (a Status object) instead."""
    ignore_audiences: bool = False
    """Answer without `status.audiences` and accept a token whatever its audience."""
    last_request: dict[str, Any] | None = None
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @classmethod
    def start(cls, directory: Path, host: str = "127.0.0.1") -> "FakeKubeApi":
        """A running fake on `host` and a free port, with a new CA and caller token in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = TestCa.create(directory / "kube-ca", "fake kube-apiserver CA")
        cert, key = _issue_for_ip(ca, host)
        caller = "kubemta-" + secrets.token_urlsafe(32)
        caller_file = directory / "kubemta-token"
        caller_file.write_text(caller, encoding="ascii")
        api = cls(host, free_port(host), ca.cert_file, caller_file, {caller})
        api._serve(cert, key)
        return api

    def mint(
        self,
        namespace: str,
        name: str,
        *,
        audiences: list[str] | None = None,
        lifetime: float = 3600.0,
        padding: int = 0,
        claimed_expiry: float | None = None,
    ) -> str:
        """A new token of ServiceAccount NAMESPACE/NAME, known to the fake; `claimed_expiry` overrides `exp`."""
        now = time.time()
        expires = now + lifetime
        audience = tuple(audiences) if audiences is not None else (DEFAULT_AUDIENCE,)
        uid = str(uuid.uuid4())
        claims: dict[str, Any] = {
            "aud": list(audience),
            "exp": int(claimed_expiry if claimed_expiry is not None else expires),
            "iat": int(now),
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        if padding:
            claims["x-padding"] = "p" * padding
        header = {"alg": "RS256", "kid": "fake-kube-api"}
        token = ".".join(
            (b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(secrets.token_bytes(256)))
        )
        self.tokens[token] = MintedToken(namespace, name, uid, audience, expires)
        return token

    def rotate_caller_token(self) -> str:
        """Write a new caller token to `caller_token_file` and accept only it from now on."""
        caller = "kubemta-" + secrets.token_urlsafe(32)
        self.caller_token_file.write_text(caller, encoding="ascii")
        self.caller_tokens = {caller}
        return caller

    def stop(self) -> None:
        """Stop answering: later connections are refused (the API is down); waits for the serving thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # -- serving -----------------------------------------------------------------------------------

    def _serve(self, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class' name)
                pass

            def do_POST(self) -> None:
                api._answer(self)

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-kube-api", daemon=True)
        self._thread.start()

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(min(length, MAX_BODY))
        if self.slow:
            self._stopping.wait(self.slow)
        if request.path.split("?")[0] != PATH:
            return _reply(request, 404, _status(404, "NotFound", f"the server could not find {request.path}"))
        scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or credentials.strip() not in self.caller_tokens:
            return _reply(request, 401, _status(401, "Unauthorized", "Unauthorized"))
        if self.fail_with is not None:
            return _reply(request, self.fail_with, _status(self.fail_with, "InternalError", "etcdserver: timeout"))
        try:
            review = json.loads(body)
            spec = review["spec"]
            token, audiences = spec["token"], spec.get("audiences") or []
        except (ValueError, KeyError, TypeError):
            return _reply(request, 400, _status(400, "BadRequest", "malformed TokenReview"))
        self.last_request = review
        with self._lock:
            self.reviews += 1
        _reply(request, 201, self._review(token, audiences))

    def _review(self, token: str, audiences: list[str]) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token, **({"audiences": audiences} if audiences else {})},
        }
        minted = self.tokens.get(token)
        wanted = audiences or [DEFAULT_AUDIENCE]
        if minted is None:
            answer["status"] = {
                "user": {},
                "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
            }
            return answer
        if minted.expires <= time.time():
            answer["status"] = {"user": {}, "error": "[invalid bearer token, service account token has expired]"}
            return answer
        bound = [audience for audience in wanted if audience in minted.audiences]
        if not bound and not self.ignore_audiences:
            answer["status"] = {"user": {}, "error": "[invalid bearer token, token audiences are invalid]"}
            return answer
        status: dict[str, Any] = {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{minted.namespace}:{minted.name}",
                "uid": minted.uid,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{minted.namespace}",
                    "system:authenticated",
                ],
                "extra": {"authentication.kubernetes.io/credential-id": [f"JTI={uuid.uuid4()}"]},
            },
        }
        if not self.ignore_audiences:
            status["audiences"] = bound
        answer["status"] = status
        return answer


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status, as the API answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _reply(request: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    try:
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
    except OSError:  # the client gave up (a timeout test)
        pass


def _issue_for_ip(ca: TestCa, host: str) -> tuple[Path, Path]:
    """A leaf certificate for the IP address `host` (TestCa.issue writes DNS names only); (cert, key)."""
    cert, key = ca.directory / f"{host}-cert.pem", ca.directory / f"{host}-key.pem"
    csr, ext = ca.directory / f"{host}.csr", ca.directory / f"{host}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        f"subjectAltName=IP:{host},DNS:kubernetes.default.svc\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=kube-apiserver", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert_file), "-CAkey", str(ca.key_file),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    """A running FakeKubeApi for one test (import the fixture into the test module)."""
    api = FakeKubeApi.start(tmp_path / "kube-api")
    try:
        yield api
    finally:
        api.stop()
