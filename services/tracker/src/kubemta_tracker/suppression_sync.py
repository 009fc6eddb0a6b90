"""Read-your-writes for the suppression list: an operator's change is answered once this replica indexed it.

The admin API publishes a `SuppressionChange` and waits for the stream's confirm; the change is then
durable, but this replica's index may not hold it yet, and the ingress' next check on the same
replica must see it. `AppliedChanges` lets the request wait (bounded by `KUBEMTA_SYNC_TIMEOUT`) until
the ingest committed the batch holding its change id: like the claims' barrier (sync.py `append`), the
change is its own barrier, and the index then also holds everything the stream confirmed before it.
The request registers before it publishes, so a change indexed before the publish call returns is
not missed.
"""

import asyncio


class AppliedChanges:
    """Changes this replica's requests wait for: `expect` before publishing, `wait` after; `seen` by the ingest."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[None]] = {}

    @property
    def waiting(self) -> int:
        """Changes expected and not yet seen indexed."""
        return len(self._waiting)

    def expect(self, change_id: str) -> None:
        """From now on, note when `change_id` is indexed."""
        self._waiting[change_id] = asyncio.get_running_loop().create_future()

    async def wait(self, change_id: str, within: float) -> bool:
        """Wait (at most `within` seconds) until the ingest indexed `change_id` (expected before); True when it did."""
        future = self._waiting.get(change_id)
        if future is None:
            return False
        try:
            async with asyncio.timeout(within):
                await future
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(change_id, None)
        return True

    def forget(self, change_id: str) -> None:
        """Stop expecting `change_id` (its publish failed)."""
        future = self._waiting.pop(change_id, None)
        if future is not None:
            future.cancel()

    def seen(self, change_ids: list[str]) -> None:
        """The ingest committed a batch holding these change ids: wake their requests."""
        for change_id in change_ids:
            future = self._waiting.get(change_id)
            if future is not None and not future.done():
                future.set_result(None)
