"""A `make bench` result document as `bench.run` writes it, for the tests of its Markdown and report."""

from typing import Any

from bench.report import _jsonable

MACHINE = {
    "nproc": 2,
    "cpu_model": "cpu",
    "mem_total_gib": 1.0,
    "kernel": "6",
    "load_average_at_start": [0.0, 0.0, 0.0],
    "postfix": "3",
    "rabbitmq": "3",
    "python": "3.12",
}


def result_document(
    summary: dict[str, Any],
    *,
    sizes: list[int],
    systems: list[str],
    repetitions: int = 1,
    duration: float = 5.0,
    started: str = "2026-12-05T13:00:00+00:00",
    **ratios: Any,
) -> dict[str, Any]:
    """The JSON-ready document of a run with `summary`; `ratios` are its ratio entries (`ratio_kubemta_to_postfix`,
    `ratio_api_to_smtp`, `paired_ratio_kubemta_to_postfix`), each left out when not given."""
    document: dict[str, Any] = _jsonable(
        {
            "started": started,
            "elapsed_seconds": 120.0,
            "machine": MACHINE,
            "config": {
                "sizes": sizes,
                "systems": systems,
                "keep_sessions": False,
                "sessions": 20,
                "repetitions": repetitions,
                "duration": duration,
                "kubemta_log_level": "INFO",
                "ingress_processes": 1,
            },
            "summary": summary,
            **ratios,
        }
    )
    return document
