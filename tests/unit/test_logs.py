"""The gateway's log lines: one JSON object each, the lines of one event-loop turn in one write."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from aikeys_gateway.observe.logs import JsonFormatter, TurnHandler


class Counting(io.StringIO):
    """A stdout that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Counting]]:
    stream = Counting()
    handler = TurnHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("aikeys.test-logs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.handlers[:] = []
    handler.close()


def lines(stream: Counting) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_the_lines_of_one_turn_leave_in_one_write_at_its_end(
    logged: tuple[logging.Logger, Counting],
) -> None:
    log, stream = logged
    for i in range(3):
        log.info("request", extra={"access": {"rid": f"r{i}", "status": 200}})
    assert stream.writes == []  # not yet: the turn goes on
    await asyncio.sleep(0)
    assert len(stream.writes) == 1
    assert [(e["rid"], e["status"], e["message"]) for e in lines(stream)] == [
        ("r0", 200, "request"),
        ("r1", 200, "request"),
        ("r2", 200, "request"),
    ]
    log.info("next turn")
    await asyncio.sleep(0)
    assert len(stream.writes) == 2


async def test_a_warning_leaves_at_once_after_the_lines_before_it(
    logged: tuple[logging.Logger, Counting],
) -> None:
    log, stream = logged
    log.info("first")
    log.warning("trouble")
    assert [(e["message"], e["level"]) for e in lines(stream)] == [("first", "info"), ("trouble", "warning")]


def test_without_a_running_loop_a_line_leaves_at_once(logged: tuple[logging.Logger, Counting]) -> None:
    log, stream = logged
    log.info("starting", extra={"access": {"port": 8080}})
    assert len(stream.writes) == 1
    (entry,) = lines(stream)
    assert (entry["message"], entry["port"], entry["logger"]) == ("starting", 8080, "aikeys.test-logs")


def test_lines_left_by_a_loop_that_ended_leave_with_the_next_loops_turn(
    logged: tuple[logging.Logger, Counting],
) -> None:
    log, stream = logged
    loop = asyncio.new_event_loop()

    async def last_words() -> None:
        log.info("in a loop")
        loop.stop()  # its flush, queued in this turn, never runs

    task = loop.create_task(last_words())
    loop.run_forever()
    assert task.done()
    loop.close()
    assert stream.writes == []

    async def next_loop() -> None:
        log.info("in the next loop")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert [e["message"] for e in lines(stream)] == ["in a loop", "in the next loop"]
    assert len(stream.writes) == 1


def test_flush_writes_what_waits(logged: tuple[logging.Logger, Counting]) -> None:
    """logging.shutdown() flushes every handler at exit: nothing a turn held is lost."""
    log, stream = logged
    handler = log.handlers[0]
    assert isinstance(handler, TurnHandler)

    async def one() -> None:
        log.info("held")
        handler.flush()
        assert [e["message"] for e in lines(stream)] == ["held"]

    asyncio.run(one())
    assert len(stream.writes) == 1  # the queued flush found nothing more


def test_time_stamps_follow_each_record_across_seconds() -> None:
    fmt = JsonFormatter()
    stamps = []
    for created in (1_764_288_000.25, 1_764_288_000.999, 1_764_288_001.5, 1_764_374_400.0):
        record = logging.makeLogRecord({"msg": "x", "levelno": 20, "levelname": "INFO"})
        record.created, record.msecs = created, (created % 1) * 1000
        stamps.append(json.loads(fmt.format(record))["ts"])
    assert stamps == [
        "2025-11-28T00:00:00.250Z",
        "2025-11-28T00:00:00.999Z",
        "2025-11-28T00:00:01.500Z",
        "2025-11-29T00:00:00.000Z",
    ]
