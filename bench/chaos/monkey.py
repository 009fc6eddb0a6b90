"""The chaos: SIGKILL a service and start it again, restart the broker; every step timed and logged.

- full mode: every `kill_interval` seconds a random service (of those killed least so far),
  until the clients are done; the broker restarts fall at even fractions of the sending (1/3
  and 2/3 for two) and are made up at the end if the clients finished first.
- quick mode: one kill of every service in random order with the broker restarts spread in
  between, whatever the clients are doing.
- kill-one: one SIGKILL of one service once half of the messages were accepted.
"""

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.chaos.config import ChaosConfig
from bench.chaos.world import World, restart_broker

BROKER = "broker"


def say(text: str) -> None:
    """A progress line on stderr (the figures go to stdout)."""
    sys.stderr.write(f"chaos: {text}\n")
    sys.stderr.flush()


@dataclass
class ChaosLog:
    kills: Counter[str] = field(default_factory=Counter)
    broker_restarts: int = 0
    steps: list[str] = field(default_factory=list)  # "12.3s kill -9 ingress (pid 123), up again in 2.1 s"
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        clock = datetime.now(UTC).strftime("%H:%M:%S.%f")[:10]  # to find the moment in the services' logs
        line = f"{time.monotonic() - self.started:7.1f}s {clock} {text}"
        self.steps.append(line)
        say(line)


class Monkey:
    def __init__(self, world: World, config: ChaosConfig, rng: random.Random) -> None:
        self.world = world
        self.config = config
        self.rng = rng
        self.log = ChaosLog()
        self._restarting: dict[str, asyncio.Task[None]] = {}  # service -> its restart after a kill

    async def kill(self, name: str, pause: float | None = None) -> None:
        """kill -9 the service by its PID; it is started again in the background after a moment (as a crashed
        pod is), while the chaos goes on. settle() waits for those restarts (bounded: ready within 90 s)."""
        await self._settle(name)
        pid = self.world.stack.pid(name)
        await self.world.stack.kill(name)
        self.log.kills[name] += 1
        self.log.note(f"kill -9 {name} (pid {pid})")
        delay = self.rng.uniform(0.2, 1.0) if pause is None else pause
        self._restarting[name] = asyncio.create_task(self._restart(name, delay, time.monotonic()))

    async def _restart(self, name: str, delay: float, killed: float) -> None:
        await asyncio.sleep(delay)
        await self.world.stack.restart(name, within=90)
        self.log.note(f"{name} ready again {time.monotonic() - killed:.1f} s after its kill")

    async def _settle(self, name: str | None = None) -> None:
        """Wait until the restart of `name` (of every service killed) is done; its failure is raised here."""
        for each in [name] if name is not None else list(self._restarting):
            task = self._restarting.pop(each, None)
            if task is not None:
                await task

    async def settle(self) -> None:
        await self._settle()

    def cancel(self) -> None:
        """Stop the restarts still under way (the run failed); the stack stops what they started."""
        for task in self._restarting.values():
            task.cancel()
        self._restarting.clear()

    async def restart_broker(self) -> None:
        await self.settle()  # every service runs: the broker's restart is the only fault of this step
        began = time.monotonic()
        self.log.broker_restarts += 1
        await restart_broker(self.world, self.config.broker_restart, self.config.broker_down, self.log.broker_restarts)
        self.log.note(
            f"broker restart {self.log.broker_restarts} ({self.config.broker_restart}); every service ready "
            f"again after {time.monotonic() - began:.1f} s"
        )

    async def _pause(self, done: asyncio.Event | None = None) -> None:
        delay = self.rng.uniform(*self.config.kill_interval)
        if done is None:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(done.wait(), delay)
        except TimeoutError:
            pass

    async def full(self, done: asyncio.Event, progress: Callable[[], float]) -> ChaosLog:
        """Random kills until `done`; broker restarts when `progress()` (0..1) passes 1/(n+1), 2/(n+1), ..."""
        restarts = self.config.broker_restarts
        while not done.is_set():
            await self._pause(done)
            if done.is_set():
                break
            if self.log.broker_restarts < restarts and progress() >= (self.log.broker_restarts + 1) / (restarts + 1):
                await self.restart_broker()
            else:
                await self.kill(self._next_victim())
        while self.log.broker_restarts < restarts:
            await self.restart_broker()
        await self.settle()
        return self.log

    def _next_victim(self) -> str:
        """A random service among those killed least so far: every service dies as often as the others (+-1)."""
        running = [name for name in self.world.services if name not in self._restarting] or self.world.services
        fewest = min(self.log.kills[name] for name in running)
        return self.rng.choice([name for name in running if self.log.kills[name] == fewest])

    async def quick(self) -> ChaosLog:
        """Each service killed once, in random order, the broker restarts spread in between."""
        plan: list[str] = list(self.world.services)
        self.rng.shuffle(plan)
        restarts = self.config.broker_restarts
        for n in range(restarts, 0, -1):
            plan.insert(round(n * len(plan) / (restarts + 1)), BROKER)
        for step in plan:
            await self._pause()
            if step == BROKER:
                await self.restart_broker()
            else:
                await self.kill(step)
        await self.settle()
        return self.log

    async def kill_one(self, name: str, when: Callable[[], bool]) -> ChaosLog:
        """One SIGKILL of `name` as soon as `when()` holds (bounded: 120 s), restarted after 1 s."""
        async with asyncio.timeout(120):
            while not when():  # noqa: ASYNC110 - a condition of the client threads, polled
                await asyncio.sleep(0.05)
        await self.kill(name, pause=1.0)
        await self.settle()
        return self.log
