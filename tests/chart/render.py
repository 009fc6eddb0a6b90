"""Render and lint the kubemta chart with the real Helm engine (helm-sdkpy), without a cluster.

helm-sdkpy exposes Lint (no values argument) and Install (no dry-run or client-only
mode). So:
- lint: the chart is copied to a temporary directory whose values.yaml is the chart's
  values deep-merged with a scenario's values (what `helm lint -f scenario.yaml` does);
- render: Install runs against a tiny fake Kubernetes API server on loopback that
  answers discovery (including the CRD kinds the chart uses), reports every object as
  absent and accepts every create; the release Helm returns carries the rendered
  manifest, which is what `helm template` would print.
"""

import asyncio
import copy
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_sdkpy  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubemta"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))

# group/version -> (kind, plural) the fake server advertises
RESOURCES: dict[str, list[tuple[str, str]]] = {
    "v1": [
        ("ConfigMap", "configmaps"),
        ("Secret", "secrets"),
        ("Service", "services"),
        ("ServiceAccount", "serviceaccounts"),
    ],
    "rbac.authorization.k8s.io/v1": [("ClusterRoleBinding", "clusterrolebindings")],
    "apps/v1": [("Deployment", "deployments")],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets")],
    "autoscaling/v2": [("HorizontalPodAutoscaler", "horizontalpodautoscalers")],
    "networking.k8s.io/v1": [("NetworkPolicy", "networkpolicies")],
    "keda.sh/v1alpha1": [("ScaledObject", "scaledobjects"), ("TriggerAuthentication", "triggerauthentications")],
    "monitoring.coreos.com/v1": [("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules")],
    "rabbitmq.com/v1beta1": [("RabbitmqCluster", "rabbitmqclusters")],
}

CLUSTER_SCOPED = {"ClusterRoleBinding"}
"""Kinds the fake server advertises as not namespaced (Helm then creates them without a namespace)."""

LINT_SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""`yaml.safe_load`'s loader on libyaml when PyYAML was built with it (its wheels are): the same safe constructor
and resolver, parsed ten times faster: a rendered release is about 150 KB, which the pure-Python parser took
0.2 to 0.3 s of CPU for in every `render` call (74 in a run of the chart tests, cached install or not)."""


class _FakeApi(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API for `helm install --wait=false`."""

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    entry = {"groupVersion": gv, "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        gv = path.removeprefix("/apis/").removeprefix("/api/")
        if gv in RESOURCES:
            resources = [
                {
                    "name": plural,
                    "singularName": "",
                    "namespaced": kind not in CLUSTER_SCOPED,
                    "kind": kind,
                    "verbs": ["create", "get", "list"],
                }
                for kind, plural in RESOURCES[gv]
            ]
            return self._send(
                200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
            )
        if self.command == "GET" and "labelSelector=" in self.path:
            return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        if self.command in ("POST", "PUT", "PATCH"):
            created = json.loads(body) if body.startswith(b"{") else {}
            return self._send(201 if self.command == "POST" else 200, created)
        return self._send(
            404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
        pass


@contextmanager
def fake_cluster() -> Iterator[Path]:
    """A fake API server on a free loopback port; yields the path of a kubeconfig for it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    # shutdown() waits for serve_forever's next poll: the default half second was most of every render
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            url = f"http://127.0.0.1:{server.server_address[1]}"
            kubeconfig.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "clusters": [{"name": "fake", "cluster": {"server": url}}],
                        "users": [{"name": "fake", "user": {"token": "fake"}}],
                        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                        "current-context": "fake",
                    }
                )
            )
            yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def scenario_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing: maps merge key by key, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def lint(values: dict[str, Any]) -> list[tuple[str, str]]:
    """`helm lint -f values`: the (severity, path) of every message above info."""
    default = yaml.safe_load((CHART / "values.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "kubemta"
        shutil.copytree(CHART, chart)
        (chart / "values.yaml").write_text(yaml.safe_dump(deep_merge(default, values), sort_keys=False))
        with fake_cluster() as kubeconfig:
            config = helm_sdkpy.Configuration(namespace="mail", kubeconfig=str(kubeconfig))
            result = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
    messages = result.get("Messages") or []
    return [
        (LINT_SEVERITY.get(message["Severity"], str(message["Severity"])), message["Path"])
        for message in messages
        if message["Severity"] >= 2
    ]


_INSTALLED: dict[str, dict[str, Any]] = {}
"""Releases already rendered in this process, by their inputs: many tests render the same values, and one
render by the Helm engine takes about a second. Only the chart in the repository is remembered (a copy made
by `chart_without_schema` is a new directory each time)."""


def install(
    values: dict[str, Any],
    release: str = "kubemta",
    namespace: str = "mail",
    chart: Path = CHART,
    *,
    fresh: bool = False,
) -> dict[str, Any]:
    """The release `helm install` produces (manifest, notes, ...); raises helm_sdkpy.InstallError on failure.
    `fresh`: render anew even when these values were rendered before (for what the chart generates at random)."""
    remembered = chart == CHART and not fresh
    # the fake API server answers Helm's `lookup`: a test that swaps it in (existing Secrets) renders anew
    server = globals()["_FakeApi"].__qualname__
    key = json.dumps([values, release, namespace, server], sort_keys=True, default=str) if remembered else None
    if key is not None and key in _INSTALLED:
        return copy.deepcopy(_INSTALLED[key])
    with fake_cluster() as kubeconfig:
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(kubeconfig))
        release_info: dict[str, Any] = asyncio.run(
            helm_sdkpy.Install(config).run(release, str(chart), values=values or None, wait=False, timeout=60)
        )
    if key is not None:
        _INSTALLED[key] = copy.deepcopy(release_info)
    return release_info


def render(
    values: dict[str, Any],
    release: str = "kubemta",
    namespace: str = "mail",
    chart: Path = CHART,
    *,
    fresh: bool = False,
) -> list[dict[str, Any]]:
    """The rendered manifests as objects (like `helm template`); `fresh` as for `install`."""
    manifest = install(values, release, namespace, chart, fresh=fresh)["manifest"]
    return [doc for doc in yaml.load_all(manifest, Loader=SAFE_LOADER) if doc]


@contextmanager
def chart_without_schema() -> Iterator[Path]:
    """A copy of the chart without values.schema.json: what `helm install --skip-schema-validation` renders."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "kubemta"
        shutil.copytree(CHART, chart)
        (chart / "values.schema.json").unlink()
        yield chart
