"""The chart lets apps authenticate instead of relaying by address: config.relayNetworks is empty by default (and the
ingress then relays for nobody), the NOTES warn while it is set; smtpIngress.serviceAccountAuth renders the
identities file, the ingress' own ServiceAccount with its token and a ClusterRoleBinding to system:auth-delegator
(TokenReview); smtpIngress.apiKeys mounts the API keys file; the NetworkPolicy admits the API from the apps'
namespaces and lets the ingress reach the Kubernetes API; the schema keeps hostile identities out of the file.
The scenario ci/app-identities-values.yaml is linted and validated against the Kubernetes schemas by test_chart.py."""

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import Identity
from tests.chart.render import CHART, SCENARIOS, chart_without_schema, install, render, scenario_values
from tests.chart.test_chart import KUBERNETES_VERSION, deployments, env_of, of_kind

(SCENARIO,) = [path for path in SCENARIOS if path.name == "app-identities-values.yaml"]
IDENTITIES = {
    "shop/checkout": ["orders@shop.example.com", "shop.example.com"],
    "monitoring/*": ["@alerts.example.com"],
    "billing/invoicer.v2": ["billing@example.com"],
}
# what the ingress' identities parser accepts as NAMESPACE/NAME (Kubernetes' DNS-1123 label / subdomain) or NAMESPACE/*
ACCOUNT = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
"""One validator for the many validations below (`jsonschema.validate` checks the whole schema again each time)."""

_cache: dict[str, list[dict[str, Any]]] = {}


def cached(name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    if name not in _cache:
        _cache[name] = render(values)
    return _cache[name]


def defaults() -> list[dict[str, Any]]:
    return cached("defaults", {})


def with_identities() -> list[dict[str, Any]]:
    return cached("identities", {"smtpIngress": {"serviceAccountAuth": {"identities": IDENTITIES}}})


def pod_of(docs: list[dict[str, Any]], name: str = "smtp-ingress") -> tuple[dict[str, Any], dict[str, Any]]:
    pod = deployments(docs)[name]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) <= 1
    return found[0] if found else None


def volume(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    found: list[dict[str, Any]] = [v for v in pod.get("volumes", []) if v["name"] == name]
    return found[0] if found else None


def mount(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    found: list[dict[str, Any]] = [m for m in container.get("volumeMounts", []) if m["name"] == name]
    return found[0] if found else None


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    configmap = named(docs, "ConfigMap", "kubemta-config")
    assert configmap is not None
    return dict(configmap["data"])


def ingress_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    policy = named(docs, "NetworkPolicy", "kubemta-smtp-ingress")
    assert policy is not None
    return policy


def api_rule(docs: list[dict[str, Any]]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = ingress_policy(docs)["spec"]["ingress"]
    (rule,) = [r for r in rules if {"port": "api", "protocol": "TCP"} in r["ports"]]
    return rule


def egress_ports(docs: list[dict[str, Any]]) -> set[int | str]:
    return {port["port"] for rule in ingress_policy(docs)["spec"]["egress"] for port in rule["ports"]}


def identities_file(docs: list[dict[str, Any]]) -> str:
    configmap = named(docs, "ConfigMap", "kubemta-serviceaccounts")
    assert configmap is not None
    assert set(configmap["data"]) == {"identities"}
    return str(configmap["data"]["identities"])


def parse_identities_file(text: str) -> dict[str, list[str]]:
    """`NAMESPACE/NAME:IDENTITY,...` per line, `#` comments: the format the ingress reads."""
    parsed: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        account, _, identities = line.partition(":")
        assert ACCOUNT.fullmatch(account), line
        parsed[account] = identities.split(",")
    return parsed


def notes(values: dict[str, Any]) -> str:
    return str(install(values)["info"].get("notes", ""))


# --- no relay by address ---


def test_by_default_no_client_relays_by_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty relayNetworks is written as an empty KUBEMTA_RELAY_NETWORKS, which the ingress reads as no network at
    all: not its own default (loopback), which would let a port-forward or a mesh sidecar on 127.0.0.1 relay."""
    assert yaml.safe_load((CHART / "values.yaml").read_text())["config"]["relayNetworks"] == []
    data = config_data(defaults())
    assert data["KUBEMTA_RELAY_NETWORKS"] == ""
    monkeypatch.setenv("KUBEMTA_RELAY_NETWORKS", data["KUBEMTA_RELAY_NETWORKS"])
    assert IngressSettings.load().relay_networks == []
    monkeypatch.delenv("KUBEMTA_RELAY_NETWORKS")
    assert IngressSettings.load().relay_networks  # unset would have been the loopback default: the chart never unsets


def test_relay_networks_that_are_set_reach_the_ingress(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render({"config": {"relayNetworks": ["10.20.0.0/16", "fd00::/8"]}})
    value = config_data(docs)["KUBEMTA_RELAY_NETWORKS"]
    monkeypatch.setenv("KUBEMTA_RELAY_NETWORKS", value)
    assert IngressSettings.load().relay_networks == [
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    ]


def test_the_notes_warn_while_relay_networks_are_set() -> None:
    quiet = notes({})
    assert "WARNING: config.relayNetworks" not in quiet
    assert "No client may relay by its address (config.relayNetworks is empty)" in quiet
    assert "may relay without authenticating" not in quiet
    loud = notes({"config": {"relayNetworks": ["10.0.0.0/8", "192.168.0.0/16"]}})
    warning = loud[loud.index("WARNING: config.relayNetworks") :]
    assert warning.startswith("WARNING: config.relayNetworks (10.0.0.0/8, 192.168.0.0/16)")
    for words in ("relay without authenticating", "send as any domain", "unaccountable", "Empty the list"):
        assert words in warning
    assert "Clients in 10.0.0.0/8, 192.168.0.0/16 may relay without authenticating." in loud


def test_the_node_address_warning_needs_relay_networks() -> None:
    """A LoadBalancer with externalTrafficPolicy Cluster hides client addresses behind nodes': an open relay only if
    node addresses may relay."""
    service = {"smtpIngress": {"service": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}}}
    assert "externalTrafficPolicy Cluster hides" not in notes(service)
    assert "externalTrafficPolicy Cluster hides" in notes({**service, "config": {"relayNetworks": ["10.0.0.0/8"]}})


# --- ServiceAccount authentication ---


def test_the_ingress_gets_its_own_service_account_and_token_for_tokenreview() -> None:
    docs = defaults()
    account = named(docs, "ServiceAccount", "kubemta-smtp-ingress")
    assert account is not None and account["metadata"]["namespace"] == "mail"
    assert account["automountServiceAccountToken"] is False  # only the pod that needs it asks for it
    pod, _ = pod_of(docs)
    assert pod["serviceAccountName"] == "kubemta-smtp-ingress"
    assert pod["automountServiceAccountToken"] is True
    for name, deployment in deployments(docs).items():
        if name != "smtp-ingress":
            spec = deployment["spec"]["template"]["spec"]
            assert spec["automountServiceAccountToken"] is False, name
            assert "serviceAccountName" not in spec, name
    assert len(of_kind(docs, "ServiceAccount")) == 1


def test_the_cluster_role_binding_lets_the_ingress_create_tokenreviews() -> None:
    docs = defaults()
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["metadata"]["name"] == "kubemta-mail-tokenreview"
    assert "namespace" not in binding["metadata"]  # cluster-scoped
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubemta-smtp-ingress", "namespace": "mail"}]
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "Role")  # the built-in role, nothing broader
    for doc in (binding, named(docs, "ServiceAccount", "kubemta-smtp-ingress")):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # two releases of the same name in two namespaces get two bindings, each for its own account
    (other,) = of_kind(render({}, namespace="mail-eu"), "ClusterRoleBinding")
    assert other["metadata"]["name"] == "kubemta-mail-eu-tokenreview"
    assert other["subjects"][0]["namespace"] == "mail-eu"


def test_an_existing_service_account_is_bound_instead() -> None:
    docs = render({"smtpIngress": {"serviceAccount": {"create": False, "name": "mta-ingress"}}})
    assert not of_kind(docs, "ServiceAccount")
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mta-ingress", "namespace": "mail"}]
    assert pod_of(docs)[0]["serviceAccountName"] == "mta-ingress"


def test_the_namespace_default_account_is_never_bound() -> None:
    """Binding `default` would let every pod of the namespace that mounts its token create TokenReviews."""
    with pytest.raises(Exception, match="never the namespace's default"):
        render({"smtpIngress": {"serviceAccount": {"create": False}}})
    docs = render({"smtpIngress": {"serviceAccount": {"create": False}, "serviceAccountAuth": {"enabled": False}}})
    pod, _ = pod_of(docs)
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False


def test_turned_off_there_is_no_token_binding_identities_file_or_kubernetes_api_egress() -> None:
    docs = render({"smtpIngress": {"serviceAccountAuth": {"enabled": False}}})
    assert not of_kind(docs, "ClusterRoleBinding")
    assert named(docs, "ConfigMap", "kubemta-serviceaccounts") is None
    pod, container = pod_of(docs)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "kubemta-smtp-ingress"  # still its own, token-less, identity
    env = env_of(container)
    assert "KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE" not in env and "KUBEMTA_SERVICEACCOUNT_AUDIENCE" not in env
    assert volume(pod, "serviceaccount-identities") is None and mount(container, "serviceaccount-identities") is None
    assert not {443, 6443} & egress_ports(docs)
    assert "Apps send as their own ServiceAccount" not in notes(
        {"smtpIngress": {"serviceAccountAuth": {"enabled": False}}}
    )


def test_the_identities_become_the_file_the_ingress_reads() -> None:
    docs = with_identities()
    text = identities_file(docs)
    assert parse_identities_file(text) == IDENTITIES
    assert text.splitlines()[1:] == [  # sorted by account, after a comment line
        "billing/invoicer.v2:billing@example.com",
        "monitoring/*:@alerts.example.com",
        "shop/checkout:orders@shop.example.com,shop.example.com",
    ]
    for identities in parse_identities_file(text).values():
        for identity in identities:
            Identity.parse(identity)  # each is a sender identity the ingress understands
    pod, container = pod_of(docs)
    env = env_of(container)
    assert env["KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE"] == {
        "name": "KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE",
        "value": "/etc/kubemta/serviceaccounts/identities",
    }
    assert env["KUBEMTA_SERVICEACCOUNT_AUDIENCE"]["value"] == "kubemta"
    # the whole ConfigMap as a directory (no subPath): the kubelet's updates reach the pod, the ingress re-reads
    assert mount(container, "serviceaccount-identities") == {
        "name": "serviceaccount-identities",
        "mountPath": "/etc/kubemta/serviceaccounts",
        "readOnly": True,
    }
    assert volume(pod, "serviceaccount-identities") == {
        "name": "serviceaccount-identities",
        "configMap": {"name": "kubemta-serviceaccounts", "items": [{"key": "identities", "path": "identities"}]},
    }
    # an identities change is no configuration change: the pods are not restarted for it
    annotations = deployments(docs)["smtp-ingress"]["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["checksum/config"]
        == (deployments(defaults())["smtp-ingress"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"])
    )


def test_without_identities_the_file_is_there_and_lets_nobody_send() -> None:
    assert parse_identities_file(identities_file(defaults())) == {}
    text = notes({})
    assert "No account may send yet: list them in smtpIngress.serviceAccountAuth.identities" in text


def test_the_settings_read_what_the_chart_sets() -> None:
    fields = set(IngressSettings.model_fields)
    docs = render(
        {
            "smtpIngress": {
                "serviceAccountAuth": {"identities": IDENTITIES, "audience": "mail.example.com"},
                "apiKeys": {"existingSecret": "keys"},
            }
        }
    )
    env = env_of(pod_of(docs)[1])
    for name in ("KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE", "KUBEMTA_SERVICEACCOUNT_AUDIENCE", "KUBEMTA_API_KEYS_FILE"):
        assert name in env and name.removeprefix("KUBEMTA_").lower() in fields
    assert env["KUBEMTA_SERVICEACCOUNT_AUDIENCE"]["value"] == "mail.example.com"


def test_an_existing_configmap_is_mounted_instead() -> None:
    auth = {"existingConfigMap": "mail-senders", "existingConfigMapKey": "senders.txt"}
    docs = render({"smtpIngress": {"serviceAccountAuth": auth}})
    assert named(docs, "ConfigMap", "kubemta-serviceaccounts") is None
    pod, container = pod_of(docs)
    source = volume(pod, "serviceaccount-identities")
    assert source is not None
    assert source["configMap"] == {"name": "mail-senders", "items": [{"key": "senders.txt", "path": "senders.txt"}]}
    value = env_of(container)["KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE"]["value"]
    assert value == "/etc/kubemta/serviceaccounts/senders.txt"
    assert "ConfigMap mail-senders (key senders.txt)" in notes({"smtpIngress": {"serviceAccountAuth": auth}})
    with pytest.raises(Exception, match="set identities or existingConfigMap, not both"):
        render({"smtpIngress": {"serviceAccountAuth": {**auth, "identities": IDENTITIES}}})


@pytest.mark.parametrize(
    "identities",
    [
        pytest.param({"shop/checkout\nevil/x": ["a@example.com"]}, id="newline-in-account"),
        pytest.param({"shop/checkout:evil.com": ["a@example.com"]}, id="colon-in-account"),
        pytest.param({"Shop/checkout": ["a@example.com"]}, id="upper-case-namespace"),
        pytest.param({"checkout": ["a@example.com"]}, id="no-namespace"),
        pytest.param({"*/*": ["a@example.com"]}, id="every-namespace"),
        pytest.param({"shop/../x": ["a@example.com"]}, id="path"),
        pytest.param({"shop/checkout": ["a@example.com,evil.com"]}, id="comma-in-identity"),
        pytest.param({"shop/checkout": ["a@example.com\nevil/*:evil.com"]}, id="newline-in-identity"),
        pytest.param({"shop/checkout": ["a b@example.com"]}, id="space-in-identity"),
        pytest.param({"shop/checkout": ["a@example.com\u2028evil/*:evil.com"]}, id="unicode-line-separator"),
        pytest.param({"shop/checkout": ["a@example.com\x85evil.com"]}, id="next-line"),
        pytest.param({"shop/checkout": ["a@b@example.com"]}, id="two-ats"),
        pytest.param({"shop/checkout": [""]}, id="empty-identity"),
        pytest.param({"shop/checkout": []}, id="no-identity"),
        pytest.param({"shop/checkout": "a@example.com"}, id="not-a-list"),
    ],
)
def test_hostile_identities_are_refused_before_they_reach_the_file(identities: dict[str, Any]) -> None:
    values = {"smtpIngress": {"serviceAccountAuth": {"identities": identities}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


def test_helm_enforces_the_identities_schema() -> None:
    with pytest.raises(Exception, match="identities"):
        render({"smtpIngress": {"serviceAccountAuth": {"identities": {"shop/x": ["a@example.com\nevil/*:evil.com"]}}}})
    with pytest.raises(Exception, match="identities"):
        render({"smtpIngress": {"serviceAccountAuth": {"identities": {"shop/x": ["a@example.com\u2028evil.com"]}}}})
    with pytest.raises(Exception, match="audience"):
        render({"smtpIngress": {"serviceAccountAuth": {"audience": ""}}})


@pytest.fixture(scope="module")
def schemaless_chart() -> Iterator[Path]:
    with chart_without_schema() as chart:
        yield chart


@pytest.mark.parametrize(
    ("identities", "error"),
    [
        ({"shop/checkout\nevil/*": ["a@example.com"]}, "is not NAMESPACE/NAME"),
        ({"shop/checkout": ["a@example.com\n"]}, "is not an address or a domain"),
        ({"shop/checkout": ["a@example.com,evil.com"]}, "is not an address or a domain"),
        ({"shop/checkout": ["a@example.com\u2028evil.com"]}, "is not an address or a domain"),
        ({"shop/checkout": "a@example.com"}, "needs a list of identities"),
    ],
)
def test_the_template_refuses_hostile_identities_when_the_schema_is_skipped(
    schemaless_chart: Path, identities: dict[str, Any], error: str
) -> None:
    """`helm install --skip-schema-validation` must not let a value become two lines or two identities of the file."""
    with pytest.raises(Exception, match=error):
        render({"smtpIngress": {"serviceAccountAuth": {"identities": identities}}}, chart=schemaless_chart)


def test_the_template_guard_lets_good_identities_through(schemaless_chart: Path) -> None:
    docs = render({"smtpIngress": {"serviceAccountAuth": {"identities": IDENTITIES}}}, chart=schemaless_chart)
    assert parse_identities_file(identities_file(docs)) == IDENTITIES


# near-valid accounts and identities with the file's separators and other hostile characters mixed in
_WORD = st.from_regex(r"[a-z0-9][-a-z0-9.]{0,8}", fullmatch=True)
_NOISE = st.sampled_from(["", "", "", "\n", "\r", ":", ",", " ", "\t", "\x00", "\x7f", "#", "/", "@", "A", "*"])
ACCOUNTS = st.builds(
    lambda ns, sep, name, noise, at: (ns + sep + name)[:at] + noise + (ns + sep + name)[at:],
    _WORD,
    st.sampled_from(["/", "/", "/", ":", ""]),
    st.one_of(_WORD, st.just("*")),
    _NOISE,
    st.integers(0, 20),
)
IDENTITIES_TEXT = st.builds(
    lambda local, at_sign, domain, noise, at: (local + at_sign + domain)[:at] + noise + (local + at_sign + domain)[at:],
    st.one_of(st.just(""), _WORD),
    st.sampled_from(["@", "@", ""]),
    _WORD,
    _NOISE,
    st.integers(0, 20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    account=st.one_of(ACCOUNTS, st.text(max_size=24)),
    identity=st.one_of(IDENTITIES_TEXT, st.text(max_size=24)),
)
def test_whatever_the_schema_accepts_stays_one_line_of_the_file(account: str, identity: str) -> None:
    """Any account and identity the schema lets through is a Kubernetes name and one field of one line."""
    values = {"smtpIngress": {"serviceAccountAuth": {"identities": {account: [identity]}}}}
    try:
        VALIDATOR.validate(values)
    except jsonschema.ValidationError:
        return
    assert ACCOUNT.fullmatch(account)
    assert identity and not re.search(r"[\s,\x00-\x1f\x7f-\x9f]", identity) and identity.count("@") <= 1
    assert len(f"{account}:{identity}".splitlines()) == 1  # no line break of any kind Python knows
    assert ":" not in identity.rpartition("@")[2]


# --- API keys ---


def test_the_api_keys_secret_is_mounted_read_only() -> None:
    docs = render({"smtpIngress": {"apiKeys": {"existingSecret": "kubemta-api-keys", "existingSecretKey": "keys"}}})
    pod, container = pod_of(docs)
    assert env_of(container)["KUBEMTA_API_KEYS_FILE"] == {
        "name": "KUBEMTA_API_KEYS_FILE",
        "value": "/etc/kubemta/api-keys/keys",
    }
    assert mount(container, "api-keys") == {"name": "api-keys", "mountPath": "/etc/kubemta/api-keys", "readOnly": True}
    assert volume(pod, "api-keys") == {
        "name": "api-keys",
        "secret": {"secretName": "kubemta-api-keys", "items": [{"key": "keys", "path": "keys"}]},
    }
    assert not [doc for doc in of_kind(docs, "Secret") if doc["metadata"]["name"] == "kubemta-api-keys"]
    for name in ("queue-manager", "dns-resolver", "delivery-worker", "tracker"):
        _, other = pod_of(docs, name)
        assert "KUBEMTA_API_KEYS_FILE" not in env_of(other) and mount(other, "api-keys") is None, name
    text = notes({"smtpIngress": {"apiKeys": {"existingSecret": "kubemta-api-keys"}}})
    assert "Secret kubemta-api-keys (key api-keys) is the ingress' API keys file" in text
    assert "kubemta-admin api-keys create NAME" in text


def test_no_api_keys_by_default_and_none_without_the_api() -> None:
    pod, container = pod_of(defaults())
    assert "KUBEMTA_API_KEYS_FILE" not in env_of(container) and volume(pod, "api-keys") is None
    with pytest.raises(Exception, match="set smtpIngress.api.enabled"):
        render({"smtpIngress": {"api": {"enabled": False}, "apiKeys": {"existingSecret": "keys"}}})
    with pytest.raises(Exception, match="existingSecretKey"):
        render({"smtpIngress": {"apiKeys": {"existingSecret": "keys", "existingSecretKey": "../etc/passwd"}}})


# --- NetworkPolicy ---


def test_the_api_admits_the_apps_namespaces() -> None:
    assert api_rule(defaults())["from"] == [{"podSelector": {}}]
    docs = render(
        {
            "smtpIngress": {
                "serviceAccountAuth": {"identities": IDENTITIES},
                "networkPolicy": {"apiFromNamespaces": ["billing", "crm"]},
            }
        }
    )
    selected = [peer["namespaceSelector"]["matchLabels"] for peer in api_rule(docs)["from"][1:]]
    assert api_rule(docs)["from"][0] == {"podSelector": {}}
    # apiFromNamespaces and the identities' namespaces, each once, sorted
    assert selected == [{"kubernetes.io/metadata.name": ns} for ns in ("billing", "crm", "monitoring", "shop")]
    # an empty apiFrom admits anyone: the namespaces must not narrow it
    open_api = render(
        {"smtpIngress": {"serviceAccountAuth": {"identities": IDENTITIES}, "networkPolicy": {"apiFrom": []}}}
    )
    assert "from" not in api_rule(open_api)
    with pytest.raises(Exception, match="apiFromNamespaces"):
        render({"smtpIngress": {"networkPolicy": {"apiFromNamespaces": ["Not A Namespace"]}}})


def test_the_ingress_may_reach_the_kubernetes_api_for_tokenreview() -> None:
    (rule,) = [
        r for r in ingress_policy(defaults())["spec"]["egress"] if {"port": 6443, "protocol": "TCP"} in r["ports"]
    ]
    assert rule == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    peer = [{"ipBlock": {"cidr": "172.20.0.10/32"}}]
    docs = render({"smtpIngress": {"networkPolicy": {"kubernetesApiPorts": [443], "kubernetesApiTo": peer}}})
    (rule,) = [r for r in ingress_policy(docs)["spec"]["egress"] if r.get("to") == peer]
    assert rule["ports"] == [{"port": 443, "protocol": "TCP"}]
    for name in ("queue-manager", "dns-resolver", "delivery-worker", "tracker"):
        policy = named(defaults(), "NetworkPolicy", f"kubemta-{name}")
        assert policy is not None
        assert 6443 not in {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}, name


# --- NOTES, the scenario, the schema ---


def test_the_notes_show_how_an_app_authenticates() -> None:
    text = notes(scenario_values(SCENARIO))
    for line in (
        "- serviceAccountToken:",
        "audience: mail.example.com",
        "expirationSeconds: 3600",
        "path: token",
        "mountPath: /var/run/secrets/kubemta",
        "POST http://kubemta-smtp-ingress-api.mail.svc:8080/v1/messages",
        '-H "Authorization: Bearer $(cat /var/run/secrets/kubemta/token)"',
        "swaks --server kubemta-smtp-ingress.mail.svc:587 --tls --auth PLAIN",
        "--auth-user shop/checkout",
        "shop/checkout: orders@shop.example.com, shop.example.com",
        "and the namespaces billing, monitoring, shop",
        "ClusterRoleBinding kubemta-mail-tokenreview",
    ):
        assert line in text, line
    # the token snippet is valid YAML a user can paste
    start = text.index("       volumes:")
    snippet = text[start : text.index("# in the container:", start)]
    volumes = yaml.safe_load(snippet)["volumes"]
    assert volumes[0]["projected"]["sources"][0]["serviceAccountToken"] == {
        "audience": "mail.example.com",
        "expirationSeconds": 3600,
        "path": "token",
    }
    assert "needs tls.enabled: AUTH is offered only over TLS" in notes({})


def test_the_schema_checks_the_new_values() -> None:
    jsonschema.validate(scenario_values(SCENARIO), SCHEMA)
    for bad in (
        {"smtpIngress": {"serviceAccountAuth": {"enable": True}}},
        {"smtpIngress": {"apiKeys": {"secret": "x"}}},
        {"smtpIngress": {"serviceAccount": {"name": "Not_Valid"}}},
        {"smtpIngress": {"serviceAccountAuth": {"audience": "two words"}}},
        {"smtpIngress": {"networkPolicy": {"kubernetesApiPorts": [0]}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_the_notes_curl_body_is_a_message_the_api_takes() -> None:
    """The NOTES' example request is valid for POST /v1/messages (the ingress' own request model)."""
    from kubemta_ingress.api_message_model import parse_request

    text = notes({"smtpIngress": {"serviceAccountAuth": {"identities": IDENTITIES}}})
    body = text.split("-d '", 1)[1].split("'", 1)[0]
    request = parse_request(body, max_recipients=10)
    assert request.from_.address and request.to
