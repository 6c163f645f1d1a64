"""One writer at a time on object storage (clipstore.db.locking): the write lease in a Lance table, on a real
local S3 server. (The local folder's file lock is exercised by the ingest and prompt tests.)"""

from __future__ import annotations

import threading

import pytest

from clipstore.db import layout
from clipstore.db.locking import WriteLease, write_lock
from clipstore.db.location import StoreLocation
from clipstore.errors import ClipstoreError, WriteLeaseLostError


@pytest.fixture
def location(s3) -> StoreLocation:
    return StoreLocation(s3.uri(), s3.storage_options)


def _lease_row(location: StoreLocation) -> dict:
    return location.connect().open_table(layout.LEASE_TABLE).to_arrow().to_pylist()[0]


def _hold(location: StoreLocation, holder: str, expires_ms: int) -> None:
    """Write the lease row as another writer (alive or dead) would have left it."""
    WriteLease(location)  # creates the table with its free row
    location.connect().open_table(layout.LEASE_TABLE).update(values={"holder": holder, "expires_ms": expires_ms})


def test_the_lease_is_taken_for_the_block_and_freed_after(location):
    with write_lock(location):
        row = _lease_row(location)
        assert row["holder"].split(":")[1].isdigit() and row["expires_ms"] > 0
    assert _lease_row(location)["holder"] == ""


def test_a_held_lease_makes_another_writer_wait_then_give_up_saying_who_holds_it(location):
    import time

    _hold(location, "otherhost:4242:abcd", int(time.time() * 1000) + 600_000)
    waits = []
    with pytest.raises(ClipstoreError) as excinfo:
        with write_lock(location, timeout=0.5, on_wait=lambda: waits.append(1)):
            pytest.fail("the block ran without the lease")
    assert waits == [1]
    assert "Another process is writing to the store at s3://" in str(excinfo.value)
    assert "otherhost:4242:abcd" in str(excinfo.value)
    assert _lease_row(location)["holder"] == "otherhost:4242:abcd"


def test_the_lease_of_a_writer_that_died_is_taken_over_once_expired(location):
    import time

    _hold(location, "deadhost:1:dead", int(time.time() * 1000) - 1)
    waits = []
    with write_lock(location, timeout=5, on_wait=lambda: waits.append(1)):
        assert _lease_row(location)["holder"] != "deadhost:1:dead"
    assert waits == []


def test_a_writer_whose_lease_was_taken_over_says_so_when_it_finishes(location):
    import time

    with pytest.raises(WriteLeaseLostError, match="lost the write lease"):
        with write_lock(location):
            # What another writer does once this one failed to renew in time: it takes the expired lease.
            location.connect().open_table(layout.LEASE_TABLE).update(
                values={"holder": "thief:7:beef", "expires_ms": int(time.time() * 1000) + 600_000}
            )
    assert _lease_row(location)["holder"] == "thief:7:beef"  # the loser did not free the winner's lease


def test_an_error_in_the_block_frees_the_lease_and_is_what_is_raised(location):
    with pytest.raises(KeyError):
        with write_lock(location):
            raise KeyError("boom")
    assert _lease_row(location)["holder"] == ""


def test_of_writers_taking_a_free_lease_at_once_exactly_one_gets_it(location):
    """Four writers, each with its own connection, race for the free lease three times: Lance's conditional
    commit lets exactly one update win each round."""
    WriteLease(location)
    for _ in range(3):
        leases = [WriteLease(location) for _ in range(4)]
        start = threading.Barrier(len(leases))
        won = []

        def race(lease: WriteLease) -> None:
            start.wait()
            if lease.try_acquire():
                won.append(lease)

        threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1
        assert _lease_row(location)["holder"] == won[0].holder
        assert won[0].release()
