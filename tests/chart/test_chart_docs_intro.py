"""The chart README's introduction (scripts/chart_docs.py INTRO) names what the chart runs and how apps get in."""

import yaml  # type: ignore[import-untyped]

from tests.chart.render import CHART


def intro() -> str:
    return (CHART / "README.md").read_text().split("## Values", 1)[0]


def test_every_component_of_the_chart_is_introduced() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = intro()
    for component in ("smtpIngress", "queueManager", "dnsResolver", "deliveryWorker", "tracker", "webhooks"):
        assert component in values and f"| `{component}` |" in text, component
    assert "four components" not in text


def test_the_intro_says_how_apps_authenticate_and_where_secrets_come_from() -> None:
    text = intro()
    assert "`config.relayNetworks` is empty by default" in text
    assert "`smtpIngress.serviceAccountAuth`" in text and "`smtpIngress.apiKeys.existingSecret`" in text
    assert "`webhooks.endpoints`" in text and "`webhooks.existingSecret`" in text
    assert "never values" not in text
