"""clipstore.describe.ensemble: eq. 6 against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipstore.describe.ensemble import blend


def test_eq6_blend_by_hand():
    a = np.array([1.0, 0.0])
    b = np.array([0.0, 1.0])
    assert blend(a, b, 0.75) == pytest.approx(np.array([0.75, 0.25]) / math.hypot(0.75, 0.25))
    assert blend(a, b, 1.0) == pytest.approx(a)
    assert blend(a, b, 0.0) == pytest.approx(b)
