"""`make bench`'s kubemta / Postfix ratio per repetition (issue 17: the spread between runs is part of the result).

The machine's speed drifts over minutes; the two runs of one repetition run back to back, so their ratio cancels
the drift that the ratio of the two medians (possibly from different repetitions) keeps.
"""

from hypothesis import given
from hypothesis import strategies as st

from bench.markdown import render
from bench.report import paired_ratios, ratios, summarise, table
from bench.throughput import RunResult, failed_run
from tests.harness.bench_documents import result_document


def _run(system: str, size: int, repetition: int, delivered: float, cpu: float) -> RunResult:
    run = failed_run(system, size, repetition, "")
    run.error = None
    run.accepted_rate = run.delivered_rate = delivered
    key = "postfix" if system == "postfix" else "total"
    run.cpu_per_1000 = {key: cpu}
    return run


def _drifting_runs() -> list[RunResult]:
    """Three repetitions at 1 KiB; the machine is 30 % slower in the second and 15 % faster in the third; kubemta
    always delivers 1.05× Postfix's messages per second, with 0.9× its CPU per message."""
    runs = []
    for repetition, speed in ((1, 1.0), (2, 0.7), (3, 1.15)):
        runs.append(_run("kubemta", 1024, repetition, 500.0 * speed * 1.05, 2.6 / speed * 0.9))
        runs.append(_run("postfix", 1024, repetition, 500.0 * speed, 2.6 / speed))
    return runs


def test_a_drift_between_repetitions_cancels_in_the_paired_ratio() -> None:
    runs = _drifting_runs()
    runs[5].delivered_rate = 500.0 * 1.15 * 1.1  # Postfix's third run 10 % faster than its phase
    summary = summarise(runs)
    assert summary["1024/kubemta"]["spread_pct"]["delivered_rate"] > 40  # each system's runs spread with the drift
    paired = paired_ratios(runs, [1024])
    delivered = paired["1024"]["delivered_rate"]
    assert delivered is not None and delivered.n == 3
    assert (delivered.median, delivered.low, delivered.high) == (1.05, round(1.05 / 1.1, 3), 1.05)
    cpu = paired["1024"]["cpu_per_message"]
    assert cpu is not None and (cpu.median, cpu.low, cpu.high) == (0.9, 0.9, 0.9)


def test_only_repetitions_where_both_runs_succeeded_are_paired() -> None:
    runs = _drifting_runs()
    runs[2] = failed_run("kubemta", 1024, 2, "smtp-source exited 1")
    runs.append(_run("kubemta", 10240, 1, 400.0, 3.0))  # no Postfix run at 10 KiB: no pair, no entry
    paired = paired_ratios(runs, [1024, 10240])
    assert list(paired) == ["1024"]
    delivered = paired["1024"]["delivered_rate"]
    assert delivered is not None and delivered.n == 2


def test_a_pair_without_a_figure_leaves_that_figure_out() -> None:
    runs = _drifting_runs()[:2]
    runs[1].delivered_rate = None  # the sink never had every message
    runs[1].cpu_per_1000 = {}
    assert paired_ratios(runs, [1024]) == {"1024": {"delivered_rate": None, "cpu_per_message": None}}


@given(
    st.lists(
        st.tuples(
            st.floats(1.0, 5000.0), st.floats(1.0, 5000.0), st.floats(0.1, 20.0), st.floats(0.1, 20.0), st.booleans()
        ),
        min_size=1,
        max_size=6,
    )
)
def test_paired_ratios_lie_within_the_pairs_ratios(pairs: list[tuple[float, float, float, float, bool]]) -> None:
    runs = []
    for repetition, (ours, theirs, our_cpu, their_cpu, postfix_failed) in enumerate(pairs, start=1):
        runs.append(_run("kubemta", 1024, repetition, ours, our_cpu))
        other = _run("postfix", 1024, repetition, theirs, their_cpu)
        if postfix_failed:
            other.error = "failed"
        runs.append(other)
    good = [pair for pair in pairs if not pair[4]]
    paired = paired_ratios(runs, [1024])
    if not good:
        assert paired == {}
        return
    delivered = paired["1024"]["delivered_rate"]
    quotients = [round(ours / theirs, 3) for ours, theirs, *_ in good]
    assert delivered is not None and delivered.n == len(good)
    assert min(quotients) == delivered.low <= delivered.median <= delivered.high == max(quotients)


def test_the_report_and_the_markdown_show_the_paired_ratios() -> None:
    runs = _drifting_runs()
    summary = summarise(runs)
    paired = paired_ratios(runs, [1024])
    text = table(
        summary, ratios(summary, [1024]), [], sizes=[1024], systems=["kubemta", "postfix"], title="t", paired=paired
    )
    assert "kubemta / postfix per repetition at 1 KiB: delivered 1.05x, CPU per message 0.90x" in text
    document = result_document(
        summary,
        sizes=[1024],
        systems=["kubemta", "postfix"],
        repetitions=3,
        ratio_kubemta_to_postfix=ratios(summary, [1024]),
        paired_ratio_kubemta_to_postfix=paired,
    )
    assert document["paired_ratio_kubemta_to_postfix"]["1024"]["delivered_rate"] == {
        "median": 1.05,
        "min": 1.05,
        "max": 1.05,
        "n": 3,
    }
    assert (
        "kubemta / Postfix per repetition (the two runs of a repetition ran back to back), median [min–max]: "
        "1 KiB: delivered 1.05×, CPU per message 0.90×." in render(document)
    )


def test_a_result_file_from_before_the_paired_ratios_still_renders() -> None:
    document = result_document(summarise([_run("kubemta", 1024, 1, 500.0, 2.5)]), sizes=[1024], systems=["kubemta"])
    assert "per repetition" not in render(document)
