"""Options of a chaos run: command-line flags (`CHAOS_QUICK=1` in the environment is `--quick`)."""

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

SERVICES: tuple[str, ...] = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
"""The services killed (the tracker is added when it runs, see ChaosConfig.tracker)."""
TRACKER = "tracker"
BROKER_RESTARTS = ("app", "node")


@dataclass(frozen=True)
class ChaosConfig:
    """Everything one chaos run is parametrised by."""

    quick: bool = False
    messages: int = 10_000
    clients: int = 8
    rate: float = 0.0  # messages per second over all clients; 0: as fast as they go
    kill_one: tuple[str, ...] = ()  # the --kill-one/--each mode: one run per service named
    repeat: int = 1  # kill-one runs per service
    kill_interval: tuple[float, float] = (2.0, 5.0)  # seconds between two chaos steps (uniform)
    broker_restarts: int = 2
    broker_restart: str = "node"  # "node": stop the node and start it on the same data; "app": stop_app/start_app
    broker_down: float = 2.0  # seconds the broker stays down
    retry_pause: float = 0.5  # seconds a client waits before it sends a failed message again
    give_up: float = 180.0  # seconds a client keeps trying one message
    drain_stall: float = 30.0  # the wait for deliveries ends when nothing arrived for this long...
    drain_timeout: float = 600.0  # ...or after this long
    settle: float = 5.0  # seconds to keep counting after the last accepted message arrived (late duplicates)
    tracker: str = "auto"  # "auto": run kubemta-tracker when it is installed and starts; "on"; "off"
    seed: int | None = None
    workdir: Path | None = None  # default: a temporary directory, removed after a run that lost nothing
    json_path: Path | None = None

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


QUICK = {
    "messages": 250,
    "clients": 6,
    "rate": 12.0,  # the sending lasts about as long as the chaos (7 steps of ~3 s)
    "broker_restart": "app",  # stop_app/start_app: seconds faster than a node restart, inside make test
    "kill_interval": (1.0, 2.5),
    "drain_stall": 20.0,
    "drain_timeout": 90.0,
    "give_up": 90.0,
}
KILL_ONE = {"messages": 200, "clients": 8, "rate": 0.0, "drain_stall": 20.0, "drain_timeout": 120.0}


def quick_config(**overrides: object) -> ChaosConfig:
    """The quick mode: a few hundred messages, one kill per service, two broker restarts."""
    return replace(ChaosConfig(quick=True), **{**QUICK, **overrides})  # type: ignore[arg-type]


def kill_one_config(services: tuple[str, ...], **overrides: object) -> ChaosConfig:
    """--kill-one/--each: 200 messages, one SIGKILL of each named service (a run each)."""
    return replace(ChaosConfig(kill_one=services), **{**KILL_ONE, **overrides})  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Send mail through kubemta while killing its services and restarting the broker; report "
        "accepted, delivered, lost (must be 0) and duplicates. Exit 1 when a message was lost.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", default=None, help="CHAOS_QUICK=1: 250 messages, one kill per service")
    add("--kill-one", metavar="SERVICE", help=f"send 200 messages, kill -9 SERVICE once ({', '.join(SERVICES)}, "
        f"{TRACKER})")  # fmt: skip
    add("--each", action="store_true", help="--kill-one for every service, one after the other")
    add("--repeat", type=int, help="kill-one runs per service (default 1; the table adds them up)")
    add("--messages", type=int, help="messages to send (full 10000, quick 250, kill-one 200)")
    add("--clients", type=int, help="concurrent SMTP clients (full 8, quick 6)")
    add("--rate", type=float, help="messages per second over all clients (0: unpaced; quick 12)")
    add("--broker-restarts", type=int, help="broker restarts during the run (default 2)")
    add("--broker-restart", choices=BROKER_RESTARTS, help="node: stop the node (its Erlang VM) and start it again "
        "on the same data (default); app: rabbitmqctl stop_app/start_app")  # fmt: skip
    add("--tracker", choices=("auto", "on", "off"), help="run kubemta-tracker (auto: when it is installed)")
    add("--seed", type=int, help="random seed of the chaos (which service, when)")
    add("--workdir", type=Path, help="keep logs and the broker's data here")
    add("--json", type=Path, dest="json_path", help="also write the figures as JSON here")
    return parser


def from_args(argv: list[str] | None = None) -> ChaosConfig:
    """The run the command line asks for (kill_one names one service, or every one with --each)."""
    args = _parser().parse_args(argv)
    quick = bool(args.quick) or os.environ.get("CHAOS_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}
    overrides = {
        key: value
        for key, value in {
            "messages": args.messages,
            "clients": args.clients,
            "rate": args.rate,
            "broker_restarts": args.broker_restarts,
            "broker_restart": args.broker_restart,
            "tracker": args.tracker,
            "seed": args.seed,
            "repeat": args.repeat,
            "workdir": args.workdir,
            "json_path": args.json_path,
        }.items()
        if value is not None
    }
    if args.each or args.kill_one:
        services = (*SERVICES, TRACKER) if args.each else (args.kill_one,)
        if not args.each and args.kill_one not in (*SERVICES, TRACKER):
            raise SystemExit(f"--kill-one: unknown service {args.kill_one!r}")
        overrides.setdefault("broker_restarts", 0)
        return kill_one_config(services, **overrides)
    if quick:
        return quick_config(**overrides)
    return replace(ChaosConfig(), **overrides)
