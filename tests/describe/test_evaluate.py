"""clipstore.describe.evaluate: the Table-1 Avg-Cos comparison of `store.evaluate` / `clipstore eval`."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_eval_table_hides_the_answers_and_has_every_row(trained, world_store):
    store, report = trained
    result = store.evaluate(ablation=(None, 0.85))
    names = [row.name for row in result.rows]
    assert names[0].startswith("CLIP zero-shot")
    assert any(n.startswith("Model A, no data filter") for n in names) and any(n.startswith("Model A, filter 0.85") for n in names)
    assert "Model A" in names and any(n.startswith("Model B") for n in names) and any(n.startswith("Ensemble") for n in names)
    assert all(0.0 < row.avg_cos < 0.99 for row in result.rows)  # no method found the hidden answer itself
    assert len({row.n for row in result.rows}) == 1 and result.head == store.heads()[0].id
    _, root = world_store
    given = store.evaluate(pairs=root / "heldout" / "manifest.jsonl", ablation=())
    assert given.pairs == "given pairs" and given.rows[0].n == 24
