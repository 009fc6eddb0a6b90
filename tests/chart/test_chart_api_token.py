"""The chart's token for the smtp-ingress HTTP API: from `smtpIngress.api.existingSecret`, or a Secret the chart
generates once and keeps on upgrades (looked up in the cluster); KUBEMTA_API_TOKEN in the ingress only, the API's
limits as env entries only when set, the schema, and the NOTES (how to read the token and curl with it)."""

import base64
import json
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import SecretStr

from kubemta_ingress.settings import IngressSettings
from tests.chart import render as render_module
from tests.chart.render import CHART, install, render
from tests.chart.test_chart import deployments, env_of, of_kind

GENERATED = "kubemta-api-token"
TOKEN_REF = {"name": "KUBEMTA_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": GENERATED, "key": "api_token"}}}
LIMIT_NAMES = {
    "KUBEMTA_API_CHECKS_PER_MINUTE",
    "KUBEMTA_API_CHECK_BURST",
    "KUBEMTA_API_MAX_CONCURRENT_CHECKS",
    "KUBEMTA_API_CHECK_TIMEOUT",
    "KUBEMTA_API_CACHE_TTL",
    "KUBEMTA_API_CACHE_SIZE",
}


def ingress_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = deployments(docs)["smtp-ingress"]["spec"]["template"]["spec"]["containers"]
    return env_of(container)


def secrets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Secret")}


def generated_token(docs: list[dict[str, Any]]) -> str:
    return base64.b64decode(secrets(docs)[GENERATED]["data"]["api_token"]).decode()


def test_by_default_the_chart_generates_a_token_the_ingress_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render({})
    secret = secrets(docs)[GENERATED]
    assert secret["type"] == "Opaque" and secret["metadata"]["labels"]["app.kubernetes.io/component"] == "smtp-ingress"
    token = generated_token(docs)
    assert len(token) == 48 and token.isalnum()
    assert generated_token(render({}, fresh=True)) != token  # random, not a constant of the chart
    monkeypatch.setenv("KUBEMTA_API_TOKEN", token)
    loaded = IngressSettings.load().api_token
    assert isinstance(loaded, SecretStr) and loaded.get_secret_value() == token
    env = ingress_env(docs)
    assert env["KUBEMTA_API_TOKEN"] == TOKEN_REF and not LIMIT_NAMES & set(env)  # the service defaults apply
    for name, deployment in deployments(docs).items():
        if name != "smtp-ingress":
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            assert "KUBEMTA_API_TOKEN" not in env_of(container), name


def test_an_existing_secret_is_used_and_none_is_generated() -> None:
    docs = render({"smtpIngress": {"api": {"existingSecret": "ops-api", "existingSecretKey": "token"}}})
    assert GENERATED not in secrets(docs)
    assert ingress_env(docs)["KUBEMTA_API_TOKEN"] == {
        "name": "KUBEMTA_API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "ops-api", "key": "token"}},
    }


def test_a_disabled_api_gets_no_token_and_no_secret() -> None:
    docs = render({"smtpIngress": {"api": {"enabled": False}}})
    assert GENERATED not in secrets(docs) and "KUBEMTA_API_TOKEN" not in ingress_env(docs)


class _ClusterWithToken(render_module._FakeApi):
    """The fake API server, but the release's token Secret already exists (an upgrade, or a re-install)."""

    token = "kept-token-from-the-first-install-0123"

    def _is_the_secret(self) -> bool:
        return self.path.split("?", 1)[0] == f"/api/v1/namespaces/mail/secrets/{GENERATED}"

    def _secret(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": GENERATED,
                "namespace": "mail",
                "labels": {"app.kubernetes.io/managed-by": "Helm"},  # with these, Helm adopts it
                "annotations": {"meta.helm.sh/release-name": "kubemta", "meta.helm.sh/release-namespace": "mail"},
            },
            "type": "Opaque",
            "data": {"api_token": base64.b64encode(self.token.encode()).decode()},
        }

    def do_GET(self) -> None:
        if self._is_the_secret():
            return self._send(200, self._secret())
        return self._handle()

    def do_PATCH(self) -> None:
        if self._is_the_secret():
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._send(200, self._secret())
        return self._handle()


@pytest.fixture
def cluster_with_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(render_module, "_FakeApi", _ClusterWithToken)
    yield


def test_the_generated_token_is_kept_when_the_secret_exists(cluster_with_token: None) -> None:
    assert generated_token(render({})) == _ClusterWithToken.token


def test_the_schema_checks_the_api_token_and_limit_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    good = {"existingSecret": "s", "existingSecretKey": "api.token", "checksPerMinute": 0.5, "checkBurst": 2}
    good |= {"maxConcurrentChecks": 1, "checkTimeout": "45s", "cacheTtl": 0, "cacheSize": 0}
    jsonschema.validate({"smtpIngress": {"api": good}}, schema)
    for bad in (
        {"existingSecretKey": "a/b"},
        {"existingSecretKey": ""},
        {"checksPerMinute": 0},
        {"checkBurst": 0},
        {"maxConcurrentChecks": 0},
        {"checkTimeout": "soon"},
        {"cacheSize": -1},
        {"token": "inline-secrets-are-not-a-value"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"smtpIngress": {"api": bad}}, schema)


def test_limits_become_ingress_env_entries_when_set() -> None:
    limits = {"checksPerMinute": 120, "checkBurst": 5, "maxConcurrentChecks": 8, "checkTimeout": "1m"}
    limits |= {"cacheTtl": "5m", "cacheSize": 0}
    env = ingress_env(render({"smtpIngress": {"api": limits}}))
    assert {name: env[name]["value"] for name in LIMIT_NAMES} == {
        "KUBEMTA_API_CHECKS_PER_MINUTE": "120",
        "KUBEMTA_API_CHECK_BURST": "5",
        "KUBEMTA_API_MAX_CONCURRENT_CHECKS": "8",
        "KUBEMTA_API_CHECK_TIMEOUT": "1m",
        "KUBEMTA_API_CACHE_TTL": "5m",
        "KUBEMTA_API_CACHE_SIZE": "0",
    }


def test_notes_show_how_to_read_the_token_and_call_the_api_with_it() -> None:
    notes = install({})["info"]["notes"]
    read = "TOKEN=$(kubectl get secret -n mail kubemta-api-token -o jsonpath='{.data.api_token}' | base64 -d)"
    assert read in notes and "(key api_token, generated by the chart)" in notes
    assert 'curl http://127.0.0.1:8080/v1/domains/example.com/check -H "Authorization: Bearer $TOKEN"' in notes
    assert notes.index(read) < notes.index("curl http://127.0.0.1:8080")
    custom = install({"smtpIngress": {"api": {"existingSecret": "ops-api", "existingSecretKey": "api.token"}}})
    notes = custom["info"]["notes"]
    assert "kubectl get secret -n mail ops-api -o jsonpath='{.data.api\\.token}'" in notes
    assert "generated by the chart" not in notes
