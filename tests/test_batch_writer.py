"""The store writer shared by generation and evaluation: batches, ordering, failures."""

from __future__ import annotations

import threading

import pytest

from cotforge.batch_writer import BatchWriter


def test_items_queued_while_a_write_runs_go_into_one_later_batch() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def write(items: list[int]) -> None:
        batches.append(items)
        if len(batches) == 1:
            release.wait(5)

    writer = BatchWriter(write, what="writing numbers")
    writer.put(0)
    while not batches:  # the first write is now blocked inside write()
        threading.Event().wait(0.01)
    for n in range(1, 6):
        writer.put(n)
    release.set()
    writer.flush()
    writer.close()
    assert batches == [[0], [1, 2, 3, 4, 5]]


def test_gather_s_collects_items_that_arrive_soon_after_the_first() -> None:
    batches: list[list[int]] = []
    writer = BatchWriter(batches.append, what="writing numbers", gather_s=0.5)
    for n in range(3):
        writer.put(n)
    writer.close()
    assert batches == [[0, 1, 2]]


def test_a_failed_write_stops_the_producer_with_what_failed() -> None:
    def write(items: list[int]) -> None:
        raise OSError("disk full")

    writer = BatchWriter(write, what="writing predictions to the store")
    writer.put(1)
    with pytest.raises(RuntimeError, match="writing predictions to the store failed: disk full"):
        writer.flush()
    with pytest.raises(RuntimeError, match="disk full"):
        writer.put(2)
    with pytest.raises(RuntimeError, match="disk full"):
        writer.close()
