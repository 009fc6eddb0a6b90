"""Print the README configuration table from the services' settings models.

Usage: .venv/bin/python scripts/config_table.py
"""

import sys

from kubemta_common.config_docs import describe_settings
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


def main() -> None:
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for service, model in SERVICES:
        for doc in describe_settings(model):
            env, default, description = doc.variable, doc.default, doc.description
            if env == "KUBEMTA_METRICS_LISTEN":
                default = "127.0.0.1:9101…9104 (one per service)"
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
