"""The clipstore-mini spec the tests share: what a store made with plain "clipstore-mini" records."""

from __future__ import annotations

from clipstore.encoders.identity import MINI_ARCHITECTURE, MINI_WEIGHTS_TAG

DEFAULT_MINI = f"{MINI_ARCHITECTURE}:{MINI_WEIGHTS_TAG}"
