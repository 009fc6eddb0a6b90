"""`python -m bench.broker_profile`: where RabbitMQ's CPU goes while kubemta relays mail.

It starts the bench's kubemta stack (own vhost, a fresh smtp-sink, the bench's static route), loads it with
smtp-source (20 sessions, 1 KiB by default) and, after a warm-up, counts for a window of `--seconds`:

- the messages the sink received and the CPU of each service and of the broker's beam.smp (ms per message);
- the reductions (the Erlang VM's unit of work) of every broker process, grouped: each AMQP channel by its
  connection's name (`kubemta-ingress`, ...) and whether it consumes or publishes, each queue's Raft server,
  the write-ahead log, the stream writers, the connection readers and writers. A group's share of all reductions
  times the broker's CPU per message estimates its CPU per message;
- the entries appended to the `events` stream per delivered message (stream messages, each an EventBatch), from
  the stream's message count in `rabbitmqctl list_queues`, which lags by up to the broker's statistics interval
  (5 s by default): over a short window an estimate.

Reductions count work, not time (a reduction of a process that copies a large binary costs more than one that
increments a counter), so the split is an estimate; the broker is the shared node (other users add noise).
"""

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench import procstats, rabbitmq
from bench.config import load
from bench.sink import Sink
from bench.source import run_source
from bench.systems import kubemta, transport_to
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost

SNAPSHOT = (
    "persistent_term:put(kubemta_bench_reductions, maps:from_list([{P, R} || P <- erlang:processes(),"
    " {reductions, R} <- [erlang:process_info(P, reductions)]])), ok."
)
"""Erlang, for `rabbitmqctl eval`: remember every process' reductions so far."""

DELTAS = r"""
Old = persistent_term:get(kubemta_bench_reductions),
Connection = fun(C) ->
    try rabbit_reader:info(C, [client_properties]) of
        [{client_properties, Props}] ->
            case lists:keyfind(<<"connection_name">>, 1, Props) of {_, _, N} -> binary_to_list(N); _ -> "other" end
    catch _:_ -> "closed" end end,
Label = fun(P) ->
    case erlang:process_info(P, registered_name) of
        {registered_name, Name} -> "process " ++ atom_to_list(Name);
        _ ->
            case proc_lib:translate_initial_call(P) of
                {rabbit_channel, _, _} ->
                    try rabbit_channel:info(P, [connection, consumer_count]) of
                        [{connection, C}, {consumer_count, 0}] -> "channel " ++ Connection(C) ++ " publishing";
                        [{connection, C}, {consumer_count, _}] -> "channel " ++ Connection(C) ++ " consuming"
                    catch _:_ -> "channel closed" end;
                {M, F, _} -> "process " ++ atom_to_list(M) ++ ":" ++ atom_to_list(F);
                _ -> "process other"
            end
    end end,
Deltas = lists:foldl(fun(P, Acc) ->
    case erlang:process_info(P, reductions) of
        {reductions, R} -> D = R - maps:get(P, Old, 0), maps:update_with(Label(P), fun(V) -> V + D end, D, Acc);
        _ -> Acc
    end end, #{}, erlang:processes()),
lists:foreach(fun({K, V}) -> io:format("~s\t~b~n", [K, V]) end, maps:to_list(Deltas)), ok.
"""
"""Erlang, for `rabbitmqctl eval`: each group's reductions since SNAPSHOT, one `label<TAB>count` line each."""


@dataclass(frozen=True)
class Profile:
    """One window: messages delivered, CPU ms per message by process, reductions by group, stream entries."""

    delivered: int
    seconds: float
    cpu_ms: dict[str, float]
    reductions: dict[str, int]
    events_entries: int


def parse_deltas(text: str, vhost: str) -> dict[str, int]:
    """`label<TAB>count` lines as a dict; a queue's Raft server (registered `<vhost>_<queue>`) reads `queue <name>`."""
    groups: dict[str, int] = defaultdict(int)
    for line in text.splitlines():
        label, _, count = line.rpartition("\t")
        if not label or not count.lstrip("-").isdigit():
            continue
        label = label.replace(f"process {vhost}_", "queue ", 1)
        groups[label] += int(count)
    return dict(groups)


async def profile(size: int, seconds: float, warm_up: float) -> Profile:
    config = load([])
    workdir = Path(tempfile.mkdtemp(prefix="kubemta-broker-profile-"))
    sink = Sink(workdir, "127.0.0.1", free_port("127.0.0.1"))
    await sink.start()
    try:
        async with kubemta(config, workdir, "127.0.0.1", transports=transport_to(sink)) as target:
            count = int(2000 * (warm_up + seconds + 30))  # more than the window can take: stopped after it
            source = asyncio.create_task(
                run_source(
                    target.address,
                    target.port,
                    count=count,
                    size=size,
                    sessions=20,
                    keep_sessions=False,
                    log_path=workdir / "smtp-source.log",
                )
            )
            try:
                await asyncio.sleep(warm_up)
                vhost = target.vhost
                queues = Vhost(rabbitmq.NODE, vhost)
                entries_before = (await asyncio.to_thread(queues.queue_depths)).get("events", 0)
                await asyncio.to_thread(rabbitmq.NODE.ctl, "eval", SNAPSHOT)
                started, delivered_before = time.monotonic(), sink.messages()
                cpu_before = {name: procstats.cpu_seconds(pids) for name, pids in target.cpu_pids.items()}
                await asyncio.sleep(seconds)
                deltas = await asyncio.to_thread(rabbitmq.NODE.ctl, "eval", DELTAS)
                cpu_after = {name: procstats.cpu_seconds(pids) for name, pids in target.cpu_pids.items()}
                delivered, elapsed = sink.messages() - delivered_before, time.monotonic() - started
                entries_after = (await asyncio.to_thread(queues.queue_depths)).get("events", 0)
            finally:
                source.cancel()
                await asyncio.gather(source, return_exceptions=True)
    finally:
        if sink.process is not None:
            sink.process.kill()
            sink.process.wait(timeout=10)
    per_message = max(delivered, 1)
    return Profile(
        delivered=delivered,
        seconds=elapsed,
        cpu_ms={name: 1000 * (cpu_after[name] - cpu_before[name]) / per_message for name in cpu_before},
        reductions=parse_deltas(deltas, vhost),
        events_entries=entries_after - entries_before,
    )


def report(result: Profile, top: int) -> str:
    broker_ms = result.cpu_ms.get("rabbitmq", 0.0)
    total = sum(value for value in result.reductions.values() if value > 0) or 1
    lines = [
        f"delivered {result.delivered} messages in {result.seconds:.1f} s ({result.delivered / result.seconds:.0f}/s)",
        "CPU ms per delivered message: "
        + ", ".join(f"{name} {value:.2f}" for name, value in result.cpu_ms.items())
        + f"; total {sum(result.cpu_ms.values()):.2f}",
        f"events stream entries per delivered message: {result.events_entries / max(result.delivered, 1):.2f}",
        "",
        f"{'broker group':<58} {'share':>6} {'est. ms/msg':>11}",
    ]
    for label, value in sorted(result.reductions.items(), key=lambda item: -item[1])[:top]:
        share = value / total
        lines.append(f"{label[:58]:<58} {100 * share:5.1f}% {broker_ms * share:11.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="message payload bytes (smtp-source -l)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measured window")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds of load before the window")
    parser.add_argument("--top", type=int, default=20, help="broker groups shown")
    args = parser.parse_args(argv)
    rabbitmq.require_broker()
    result = asyncio.run(profile(args.size, args.seconds, args.warm_up))
    print(report(result, args.top))  # noqa: T201 - the tool's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
