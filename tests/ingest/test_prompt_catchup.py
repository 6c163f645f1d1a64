"""Prompts found at ingest reach the bank even when a run is killed, crashes or cannot update the bank (#11).

Every test compares the bank with the one an uninterrupted ingest of the same rendered folder builds in a
fresh store: same prompts, same order (the order decides which of two near-duplicates is kept).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from contextlib import contextmanager
from datetime import timedelta

import lancedb
import pyarrow as pa
import pytest
from click.testing import CliRunner

import clipstore
from clipstore.db import layout, migrate, tables
from clipstore.ingest.run import BANK_STAGE, EMBED_STAGE
from workers import ingest_and_hold

MINI = "clipstore-mini"
N = 40  # rendered images, each with its prompt in a PNG `parameters` chunk
OTHER_GENERATION = "images__0123456789ab"  # a model switch's images table


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> str:
    from clipstore.world import render_folder

    return render_folder(tmp_path_factory.mktemp("world"), N, seed=5, size=64).folder


@pytest.fixture(scope="module")
def reference_bank(rendered, tmp_path_factory) -> list[str]:
    """The bank texts, in insertion order, after one uninterrupted ingest of `rendered` into a fresh store."""
    store = clipstore.connect(tmp_path_factory.mktemp("reference") / "s.clipstore", model=MINI)
    report = store.ingest(rendered)
    assert (report.added, report.prompts_found, report.prompts_from_earlier_runs) == (N, N, 0)
    bank = _bank(store)
    assert 0 < len(bank) == report.prompts_inserted < N  # the rendered prompts include near-duplicates
    return bank


def _bank(store) -> list[str]:
    return [prompt.text for prompt in store.list_prompts(limit=10_000)]


def _offered_flags(store, name: str | None = None) -> list:
    table = store.db.open_table(name) if name else tables.open_images(store.db)
    return tables.read_columns(table, [layout.PROMPT_OFFERED]).column(layout.PROMPT_OFFERED).to_pylist()


@contextmanager
def _bank_unavailable(monkeypatch):
    """The prompt bank cannot be updated inside the block (its MiniLM model cannot be loaded)."""

    def unavailable(*args, **kwargs):
        raise clipstore.ModelUnavailableError("all-MiniLM-L6-v2 cannot be loaded (offline)")

    with monkeypatch.context() as patch:
        patch.setattr("clipstore.encoders.minilm.load_minilm_encoder", unavailable)
        yield


def _wait_for_committed_images(store_path, child, timeout: float = 300) -> None:
    db = lancedb.connect(store_path, read_consistency_interval=timedelta(0))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.open_table(layout.IMAGES).count_rows() > 0:
            return
        assert child.is_alive(), "the ingest stopped before committing any image"
        time.sleep(0.05)
    pytest.fail(f"the ingest committed no image within {timeout} s")


@pytest.mark.slow
def test_an_ingest_killed_midway_loses_no_prompt_the_rerun_completes_the_bank(rendered, reference_bank, store, store_path):
    child = multiprocessing.get_context("spawn").Process(target=ingest_and_hold, args=(str(store_path), rendered, N // 2))
    child.start()
    try:
        _wait_for_committed_images(store_path, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL

    store = clipstore.connect(store_path)
    committed = store.count_images()
    assert 0 < committed < N
    assert store.count_prompts() == 0 and not any(_offered_flags(store))  # killed before the bank update

    report = store.ingest(rendered)
    assert report.prompts_from_earlier_runs == committed
    assert report.prompts_found + report.prompts_from_earlier_runs == N
    assert _bank(store) == reference_bank
    assert report.prompts_inserted == len(reference_bank)
    assert store.count_images() == N and all(_offered_flags(store))

    again = store.ingest(rendered)  # nothing left to offer
    assert (again.skipped_unchanged, again.prompts_found, again.prompts_from_earlier_runs) == (N, 0, 0)
    assert _bank(store) == reference_bank


def test_a_failed_bank_update_is_retried_by_the_next_ingest(rendered, reference_bank, store, monkeypatch):
    with _bank_unavailable(monkeypatch):
        first = store.ingest(rendered)
    assert (first.added, first.prompts_found, first.prompts_inserted) == (N, N, 0)
    assert len(first.warnings) == 1 and "the next ingest offers them" in first.warnings[0]
    assert store.count_prompts() == 0 and not any(_offered_flags(store))

    again = store.ingest(rendered)  # every file unchanged: only the bank has work to do
    assert (again.skipped_unchanged, again.prompts_found, again.prompts_from_earlier_runs) == (N, 0, N)
    assert again.warnings == () and again.prompts_inserted == len(reference_bank)
    assert _bank(store) == reference_bank
    assert all(_offered_flags(store))


def test_a_crash_between_the_bank_write_and_the_marks_offers_again_without_doubling(rendered, reference_bank, store, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the bank write, before the image rows were marked")

    with monkeypatch.context() as patch:
        patch.setattr(tables, "update_where_in", crash)
        with pytest.raises(KeyboardInterrupt):
            store.ingest(rendered)
    assert _bank(store) == reference_bank and not any(_offered_flags(store))

    again = store.ingest(rendered)
    assert (again.prompts_from_earlier_runs, again.prompts_inserted) == (N, 0)  # the gate refuses exact repeats
    assert _bank(store) == reference_bank
    assert all(_offered_flags(store))


def test_unoffered_prompts_travel_with_a_model_switch(rendered, reference_bank, store, monkeypatch):
    with _bank_unavailable(monkeypatch):
        store.ingest(rendered)
    store.reembed("clipstore-mini:random")  # re-embed copies every column but the vectors
    assert tables.active_tables(store.db)["images"] != layout.IMAGES
    assert _offered_flags(store) == [None] * N

    report = store.ingest(rendered)
    assert report.prompts_from_earlier_runs == N and all(_offered_flags(store))
    assert _bank(store) == reference_bank


def test_migration_0005_flags_every_images_table_and_an_old_store_catches_up(rendered, reference_bank, store, store_path):
    store.ingest(rendered)
    # Back to before migration 0005: no flag column, on `images` and on another generation of it, and a bank
    # that missed the images' prompts (what an interrupted ingest left before this fix).
    images = store.db.open_table(layout.IMAGES)
    images.drop_columns([layout.PROMPT_OFFERED])
    store.db.create_table(OTHER_GENERATION, data=images.to_arrow())
    store.db.open_table(layout.MIGRATIONS).delete("name = '0005_prompt_offered'")
    store.db.open_table(layout.PROMPTS).delete("seq >= 0")
    old = clipstore.connect(store_path, apply_migrations=False)
    assert [m.name for m in old.migrations() if not m.applied] == ["0005_prompt_offered"]
    for name in (layout.IMAGES, OTHER_GENERATION):
        assert layout.PROMPT_OFFERED not in old.db.open_table(name).schema.names

    reopened = clipstore.connect(store_path)  # applies 0005
    assert all(m.applied for m in reopened.migrations())
    for name in (layout.IMAGES, OTHER_GENERATION):
        table = reopened.db.open_table(name)
        assert table.schema.field(layout.PROMPT_OFFERED).type == pa.bool_()
        assert table.count_rows() == N and _offered_flags(reopened, name) == [None] * N
    assert tables.stored_model(reopened.db.open_table(layout.IMAGES)).same_vectors_as(store.model)

    migration = next(m for m in migrate.available_migrations() if m.name == "0005_prompt_offered")
    migration.apply(migrate.MigrationContext(reopened.db, reopened.path, reopened.model))  # idempotent
    assert reopened.db.open_table(layout.IMAGES).schema.names.count(layout.PROMPT_OFFERED) == 1

    report = reopened.ingest(rendered)
    assert (report.skipped_unchanged, report.prompts_from_earlier_runs) == (N, N)
    assert _bank(reopened) == reference_bank


def test_ingest_reports_its_stages_the_prompt_bank_included(rendered, reference_bank, store):
    calls: list[tuple[str, int, int]] = []
    store.ingest(rendered, progress=lambda stage, done, total: calls.append((stage, done, total)))
    stages = [stage for stage, _, _ in calls]
    assert stages[0] == EMBED_STAGE and stages[-1] == BANK_STAGE
    assert stages == sorted(stages, key=[EMBED_STAGE, BANK_STAGE].index)  # one stage after the other
    embed = [(done, total) for stage, done, total in calls if stage == EMBED_STAGE]
    assert embed[-1][0] == embed[-1][1] >= N
    bank = [(done, total) for stage, done, total in calls if stage == BANK_STAGE]
    assert bank[0] == (0, N) and bank[-1] == (N, N)
    assert any(0 < done < N for done, _ in bank)  # the bank's own embedding work reports through it
    assert [done for done, _ in bank] == sorted(done for done, _ in bank)

    calls.clear()
    store.ingest(rendered, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert {stage for stage, _, _ in calls} == {EMBED_STAGE}  # no prompt waits for the bank: no bank stage


def test_cli_ingest_shows_the_prompt_bank_stage_and_the_prompts_of_earlier_runs(rendered, store, store_path, monkeypatch):
    from clipstore import cli
    from clipstore.cli.common import ProgressBar

    shown: list[str] = []
    monkeypatch.setattr(ProgressBar, "update", lambda self, stage, done, total: shown.append(stage))
    with monkeypatch.context() as patch:
        patch.setattr(tables, "update_where_in", lambda *args, **kwargs: None)  # a run that never marked its rows
        store.ingest(rendered)
    result = CliRunner().invoke(cli.main, ["ingest", rendered, "--store", str(store_path)])
    assert result.exit_code == 0, result.output
    assert f"Prompts: 0 found with new images, {N} left by earlier runs; 0 of {N} kept in the prompt bank" in result.output
    assert shown[0] == EMBED_STAGE and shown[-1] == BANK_STAGE
