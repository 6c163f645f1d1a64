"""What `clipstore train` is asked to do: `TrainOptions` (the CLI's defaults), apart from the training code so that
the command line can build its options without importing it."""

from __future__ import annotations

from dataclasses import dataclass

from clipstore.errors import InvalidOptionError
from clipstore.results import _AsDict


@dataclass(frozen=True)
class TrainOptions(_AsDict):
    """Hyper-parameters of `clipstore train` (defaults in parentheses are the CLI's)."""

    epochs: int = 20
    batch_size: int = 32
    lr_vision: float = 1e-5
    lr_fc: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    patience: int = 4
    freeze_vision: bool = False
    mix: float = 0.5
    dropout: float = 0.1
    augment: bool = True
    views: int = 4
    text_augment: int = 0
    dedup_threshold: float | None = 0.85
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidOptionError("epochs and batch_size must be at least 1")
        if not 0.0 <= self.mix <= 1.0:
            raise InvalidOptionError(f"mix (eq. 3's alpha) must be within [0, 1], not {self.mix}")
