"""Group commit for the webhook endpoint.

Every accepted webhook must be on disk before we answer, and a commit per request caps
throughput at one transaction's cost. Requests therefore hand their events to one writer
loop, which commits whatever has queued up meanwhile in a single statement and
transaction and then releases each waiting request. Ingest is enqueued after the commit
by a second loop that coalesces the new ids of several commits into one task message;
the answer does not wait for the broker (if it is down, the rows are safe and the
sweeper sends them later).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from bridge.adapters.base import InboundEvent
from bridge.engine.inbox import record_batch
from bridge.runtime import Runtime

log = logging.getLogger("posbridge.web")

MAX_BATCH = 512


def _future() -> asyncio.Future[tuple[list[int], int]]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Job:
    system: str
    events: Sequence[InboundEvent]
    body: bytes
    correlation_id: str | None
    done: asyncio.Future[tuple[list[int], int]] = field(default_factory=_future)


class InboxBatcher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._queue: asyncio.Queue[_Job] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: list[int] = []
        self._outbox_ready: asyncio.Event | None = None

    def _start(self) -> asyncio.Queue[_Job]:
        if self._queue is None or any(t.done() for t in self._tasks):
            for task in self._tasks:
                task.cancel()
            loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._outbox_ready = asyncio.Event()
            self._tasks = [loop.create_task(self._write(self._queue)), loop.create_task(self._publish())]
        return self._queue

    async def record(
        self, system: str, events: Sequence[InboundEvent], body: bytes, correlation_id: str | None = None
    ) -> tuple[list[int], int]:
        """Store the events durably; returns (new inbox ids, duplicates)."""
        queue = self._start()
        job = _Job(system, events, body, correlation_id)
        await queue.put(job)
        return await job.done

    async def _write(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            jobs = [await queue.get()]
            while not queue.empty() and len(jobs) < MAX_BATCH:
                jobs.append(queue.get_nowait())
            try:
                results: list[tuple[list[int], int] | BaseException] = list(
                    await run_in_threadpool(self._commit, jobs)
                )
            except Exception as err:
                # The whole transaction rolled back. Commit each request alone, so one
                # request the database refuses cannot fail the others that shared it.
                results = [err] if len(jobs) == 1 else [await self._commit_alone(job) for job in jobs]
            for job, result in zip(jobs, results, strict=True):
                if isinstance(result, BaseException):
                    if not job.done.done():
                        job.done.set_exception(result)
                    continue
                if not job.done.done():
                    job.done.set_result(result)
                self._outbox.extend(result[0])
            if self._outbox and self._outbox_ready is not None:
                self._outbox_ready.set()

    async def _commit_alone(self, job: _Job) -> tuple[list[int], int] | BaseException:
        try:
            return (await run_in_threadpool(self._commit, [job]))[0]
        except Exception as err:
            return err

    def _commit(self, jobs: list[_Job]) -> list[tuple[list[int], int]]:
        with self.rt.db.engine.begin() as conn:
            return record_batch(
                conn, [(job.system, job.events, job.body, job.correlation_id) for job in jobs]
            )

    async def _publish(self) -> None:
        assert self._outbox_ready is not None
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            ids, self._outbox = self._outbox, []
            if not ids:
                continue
            try:
                await run_in_threadpool(self.rt.dispatch.ingest, ids)
            except Exception as err:  # the rows are safe; the sweeper sends them later
                log.error("enqueue of %d inbox rows failed, the sweeper will retry: %s", len(ids), err)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
