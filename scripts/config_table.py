"""Print the README configuration table from the services' settings models.

Usage: .venv/bin/python scripts/config_table.py
"""

import sys

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kubemta_common.config_types import ListenAddress, format_duration
from kubemta_common.settings import ServiceSettings
from kubemta_delivery_worker.settings import WorkerSettings
from kubemta_dns_resolver.settings import ResolverSettings
from kubemta_ingress.settings import IngressSettings
from kubemta_queue_manager.settings import QueueManagerSettings

SERVICES: list[tuple[str, type[ServiceSettings]]] = [
    ("ingress", IngressSettings),
    ("queue-manager", QueueManagerSettings),
    ("dns-resolver", ResolverSettings),
    ("delivery-worker", WorkerSettings),
]
DURATION_HINTS = ("timeout", "lifetime", "after", "ttl", "interval", "seconds", "schedule")


def _default(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        if name == "hostname":
            return "the host's FQDN"
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, ListenAddress):
        return str(value)
    if isinstance(value, list):
        items = [
            format_duration(v) if isinstance(v, float) and any(h in name for h in DURATION_HINTS) else str(v)
            for v in value
        ]
        return ",".join(items) or "(empty)"
    if isinstance(value, float) and any(h in name for h in DURATION_HINTS):
        return format_duration(value)
    return str(value) if value not in ("", None) else "(empty)"


def main() -> None:
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for service, model in SERVICES:
        for name, field in model.model_fields.items():
            env = f"KUBEMTA_{name.upper()}"
            default = _default(name, field)
            if name == "metrics_listen":
                default = "127.0.0.1:9101…9104 (one per service)"
            description = field.description or ""
            if env in rows:
                rows[env][2].append(service)
            else:
                rows[env] = (default, description, [service])
    out = ["| variable | default | used by | meaning |", "|---|---|---|---|"]
    for env, (default, description, services) in rows.items():
        used_by = "all" if len(services) == len(SERVICES) else ", ".join(services)
        out.append(f"| `{env}` | `{default}` | {used_by} | {description} |")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
