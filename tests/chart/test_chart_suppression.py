"""The chart's `suppression` values: the TTL (the `suppressions` stream's age limit) goes to the shared ConfigMap that
every component (the tracker and the ingress among them) reads, so every service declares the stream alike; the
ingress' check settings go there too, only when set; the services' settings models accept what the chart writes;
the schema refuses what they would not."""

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from kubemta_common.settings import ServiceSettings
from kubemta_ingress.settings import IngressSettings
from tests.chart.render import CHART, render
from tests.chart.test_chart import deployments, of_kind

_cache: dict[str, list[dict[str, Any]]] = {}


def _defaults() -> list[dict[str, Any]]:
    if "defaults" not in _cache:
        _cache["defaults"] = render({})
    return _cache["defaults"]


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (found,) = [doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"] == "kubemta-config"]
    return dict(found["data"])


def test_the_ttl_and_the_check_go_to_the_config_map_every_component_reads() -> None:
    docs = _defaults()
    data = _config(docs)
    assert data["KUBEMTA_SUPPRESSION_TTL"] == "30d"
    assert data["KUBEMTA_SUPPRESSION_CHECK"] == "true"
    assert not {"KUBEMTA_SUPPRESSION_CHECK_TIMEOUT", "KUBEMTA_SUPPRESSION_CACHE_TTL"} & set(data)
    running = deployments(docs)
    assert {"tracker", "smtp-ingress", "queue-manager"} <= set(running)
    for name, deployment in running.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        sources = [source.get("configMapRef", {}).get("name") for source in container.get("envFrom", [])]
        assert "kubemta-config" in sources, name
    assert ServiceSettings.model_validate({"suppression_ttl": data["KUBEMTA_SUPPRESSION_TTL"]}).suppression_ttl == (
        30 * 86400
    )


def test_set_values_reach_the_services_settings() -> None:
    data = _config(render({"suppression": {"ttl": "60d", "check": {"enabled": False, "timeout": "1s", "cacheTtl": 0}}}))
    assert data["KUBEMTA_SUPPRESSION_TTL"] == "60d"
    assert (data["KUBEMTA_SUPPRESSION_CHECK"], data["KUBEMTA_SUPPRESSION_CHECK_TIMEOUT"]) == ("false", "1s")
    assert data["KUBEMTA_SUPPRESSION_CACHE_TTL"] == "0"
    settings = IngressSettings.model_validate(
        {
            "suppression_ttl": data["KUBEMTA_SUPPRESSION_TTL"],
            "suppression_check": data["KUBEMTA_SUPPRESSION_CHECK"],
            "suppression_check_timeout": data["KUBEMTA_SUPPRESSION_CHECK_TIMEOUT"],
            "suppression_cache_ttl": data["KUBEMTA_SUPPRESSION_CACHE_TTL"],
        }
    )
    assert (settings.suppression_ttl, settings.suppression_check) == (60 * 86400, False)
    assert (settings.suppression_check_timeout, settings.suppression_cache_ttl) == (1.0, 0.0)


def test_the_schema_checks_the_suppression_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(
        {"suppression": {"ttl": "14d", "check": {"enabled": True, "timeout": 0.3, "cacheTtl": ""}}}, schema
    )
    for bad in (
        {"suppression": {"ttl": "soon"}},
        {"suppression": {"ttl": ""}},
        {"suppression": {"check": {"enabled": "yes"}}},
        {"suppression": {"check": {"timeout": "1 minute"}}},
        {"suppression": {"days": 30}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
