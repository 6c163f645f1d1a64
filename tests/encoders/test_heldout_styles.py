"""The evaluation-only drawings of tests/heldout_styles.py draw what their prompt says: one drawing per
(colour, shape) pair, shapes of the right area, deterministic per seed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heldout_styles import PALETTE, SHAPES, STYLES, signed_distance, styled_set


@pytest.mark.parametrize("style", STYLES)
def test_a_styled_set_has_one_drawing_per_colour_and_shape_and_repeats_per_seed(style):
    pairs = styled_set(style, seed=3, size=64)
    assert len(pairs) == len(PALETTE) * len(SHAPES) == len({p.prompt for p in pairs})
    assert all(p.prompt == f"a {p.colour} {p.shape}" and p.image.size == (64, 64) for p in pairs)
    again = styled_set(style, seed=3, size=64)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(pairs, again))
    other = styled_set(style, seed=4, size=64)
    assert any(not np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(pairs, other))


@pytest.mark.parametrize(("shape", "area"), [
    ("circle", math.pi),
    ("square", 1.7 ** 2),
    ("diamond", 2 * 0.65),
    ("hexagon", 3 * math.sqrt(3) / 2),
    ("triangle", 3 * math.sqrt(3) / 4),
    ("ring", math.pi * (1.0 ** 2 - 0.6 ** 2)),
])
def test_shapes_cover_the_area_their_geometry_says(shape, area):
    radius = 40.0
    inside = (signed_distance(shape, 200, (100.0, 100.0), radius, 0.0) < 0).sum()
    assert inside == pytest.approx(area * radius * radius, rel=0.03)


def test_a_star_is_bigger_than_its_inner_pentagon_and_smaller_than_its_outer_one():
    coverage = 0.5 - signed_distance("star", 200, (100.0, 100.0), 40.0, 0.0)
    pentagon = (signed_distance("pentagon", 200, (100.0, 100.0), 40.0 * 1.1, 0.0) < 0).sum()
    assert 0.3 * pentagon < coverage.sum() < 0.7 * pentagon
