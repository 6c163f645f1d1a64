"""Every library progress callback is progress(stage, done, total)."""

from __future__ import annotations

from clipstore.describe.describer import DESCRIBE_STAGE
from clipstore.prompts.bank import ADD_STAGE
from clipstore.world import render_folder
from clipstore.world.samples import RENDER_STAGE


def _recorder():
    calls: list[tuple[str, int, int]] = []
    return calls, lambda stage, done, total: calls.append((stage, done, total))


def test_render_folder_reports_each_image(tmp_path):
    calls, progress = _recorder()
    render_folder(tmp_path / "w", 5, size=32, progress=progress)
    assert calls == [(RENDER_STAGE, done, 5) for done in range(1, 6)]


def test_add_prompts_reports_its_embedding_work(store):
    calls, progress = _recorder()
    store.add_prompts(["a red circle", "a blue square", "a red circle!"], progress=progress)
    assert {stage for stage, _, _ in calls} == {ADD_STAGE}
    assert calls[-1][1] == calls[-1][2] > 0
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)


def test_describe_folder_reports_each_file(store, tmp_path):
    rendered = render_folder(tmp_path / "w", 4, size=64)
    store.ingest(rendered.folder)
    calls, progress = _recorder()
    described = list(store.describe_folder(rendered.folder, progress=progress))
    assert len(described) == 4
    assert calls == [(DESCRIBE_STAGE, done, 4) for done in range(1, 5)]
