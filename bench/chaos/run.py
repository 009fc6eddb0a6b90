"""One chaos run (full or quick), or the kill-one runs: start, send, break things, wait, count.

Everything is bounded: the clients give up a message after `give_up` seconds, a restarted
service must be ready within 90 s, the wait for deliveries ends when nothing arrived for
`drain_stall` seconds or after `drain_timeout`.
"""

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.chaos.config import TRACKER, ChaosConfig
from bench.chaos.explain import explain
from bench.chaos.logscan import scan
from bench.chaos.monkey import ChaosLog, Monkey, say
from bench.chaos.report import ChaosResult, tally
from bench.chaos.senders import Letter, Senders, letters, run_id
from bench.chaos.world import World, private_broker, running_world
from tests.harness.mail_sink import MailSink

PROGRESS_EVERY = 10.0


async def run(config: ChaosConfig) -> list[ChaosResult]:
    """The run(s) `config` asks for, on one private broker node. The work directory is removed unless it was
    given or a message was lost (then the logs are kept and its path printed)."""
    seed = config.seed if config.seed is not None else random.randrange(2**32)
    say(f"seed {seed}")
    rng = random.Random(seed)
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="kubemta-chaos-"))
    results: list[ChaosResult] = []
    keep = config.workdir is not None
    try:
        async with private_broker(workdir) as node:
            if config.kill_one:
                for name in config.kill_one:
                    for n in range(1, config.repeat + 1):
                        suffix = f"-{n}" if config.repeat > 1 else ""
                        async with running_world(config, node, workdir / f"kill-{name}{suffix}") as world:
                            results.append(await _kill_one(config, world, name, rng))
            else:
                async with running_world(config, node, workdir / config.mode) as world:
                    results.append(await _chaos(config, world, rng))
        keep = keep or not all(result.ok for result in results)
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            say(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


async def _chaos(config: ChaosConfig, world: World, rng: random.Random) -> ChaosResult:
    mail = letters(config.messages, run_id(), rng.randrange(2**32))
    monkey = Monkey(world, config, rng)
    if config.quick:
        return await _session(config, world, mail, monkey, config.mode, lambda senders, done: monkey.quick())
    return await _session(
        config,
        world,
        mail,
        monkey,
        config.mode,
        lambda senders, done: monkey.full(done, lambda: senders.stats.done / len(mail)),
    )


async def _kill_one(config: ChaosConfig, world: World, name: str, rng: random.Random) -> ChaosResult:
    if name not in world.services:
        return ChaosResult(f"kill-one {name}", 0, 0, False, skipped=f"{name} does not run here")
    mail = letters(config.messages, run_id(), rng.randrange(2**32))
    monkey = Monkey(world, config, rng)
    half = len(mail) // 2

    def chaos(senders: Senders, done: asyncio.Event) -> Awaitable[ChaosLog]:
        return monkey.kill_one(name, lambda: done.is_set() or senders.stats.done >= half)

    return await _session(config, world, mail, monkey, f"kill-one {name}", chaos)


async def _session(
    config: ChaosConfig,
    world: World,
    mail: list[Letter],
    monkey: Monkey,
    mode: str,
    chaos: Callable[[Senders, asyncio.Event], Awaitable[ChaosLog]],
) -> ChaosResult:
    """Clients send `mail` while `chaos` runs; then wait for the deliveries and count."""
    began = time.monotonic()
    host, port = world.smtp
    senders = Senders(
        host,
        port,
        mail,
        clients=config.clients,
        rate=config.rate,
        retry_pause=config.retry_pause,
        give_up=config.give_up,
    )
    done = asyncio.Event()
    sending = asyncio.create_task(asyncio.to_thread(senders.run))
    sending.add_done_callback(lambda _: done.set())
    progress = asyncio.create_task(_progress(senders, world.sink, monkey.log, len(mail)))
    try:
        await chaos(senders, done)
        await sending
        send_seconds = time.monotonic() - began
        drain_seconds = await _drain(world.sink, set(senders.stats.accepted), config)
    finally:
        senders.stopping.set()
        progress.cancel()
        monkey.cancel()
        if not sending.done():  # the chaos failed: let the clients finish their current message (bounded)
            await asyncio.wait([sending], timeout=60)
    result = ChaosResult(mode, len(mail), config.clients, TRACKER in world.services)
    tally(result, mail, senders.stats, world.sink, monkey.log)
    result.exited = [name for name, service in world.stack.services.items() if service.process.poll() is not None]
    if result.duplicated and TRACKER in world.services:
        url, token = world.stack.env["KUBEMTA_TRACKER_URL"], world.stack.env["KUBEMTA_TRACKER_TOKEN"]
        result.causes = await asyncio.to_thread(explain, url, token, result.duplicated)
    guards, errors = await asyncio.to_thread(scan, world.workdir)
    result.guards = dict(sorted(guards.items()))
    result.error_lines = dict(sorted(errors.items()))
    result.send_seconds = send_seconds
    result.drain_seconds = drain_seconds
    result.wall_seconds = time.monotonic() - began
    return result


async def _drain(sink: MailSink, accepted: set[str], config: ChaosConfig) -> float:
    """Wait until every accepted message arrived (then `settle` seconds more, for late duplicates), or nothing
    arrived for `drain_stall` seconds, or `drain_timeout` passed. Returns the seconds waited."""
    began = last_change = time.monotonic()
    seen = sink.total
    while True:
        now = time.monotonic()
        if sink.total != seen:
            seen, last_change = sink.total, now
        if all(sink.deliveries[message_id] > 0 for message_id in accepted):
            await asyncio.sleep(config.settle)
            break
        if now - last_change > config.drain_stall or now - began > config.drain_timeout:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - began


async def _progress(senders: Senders, sink: MailSink, chaos: ChaosLog, total: int) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        stats = senders.stats
        say(
            f"{time.monotonic() - chaos.started:7.1f}s accepted {len(stats.accepted)}/{total}, "
            f"delivered {sink.total}, kills {sum(chaos.kills.values())}, broker restarts {chaos.broker_restarts}",
        )
