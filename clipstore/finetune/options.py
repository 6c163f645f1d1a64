"""What a fine-tune run is asked to do: `FinetuneOptions` (the CLI's defaults) and the `METHODS` it knows."""

from __future__ import annotations

from dataclasses import dataclass

from clipstore.errors import InvalidOptionError
from clipstore.results import _AsDict

METHODS = ("mcip", "2sft")

LR_PROBE_SCALES = (1.0, 10.0, 100.0)
"""What the learning-rate probe multiplies `lr_backbone` and `lr_head` by: a large pretrained CLIP wants the
paper-style small rates (1x), a small model such as clipstore-mini 10-100x (BENCHMARKS.md)."""

LR_PROBE_MAX_STEPS = 30
"""Steps of one probe: one epoch, or this many batches when an epoch is longer."""


@dataclass(frozen=True)
class FinetuneOptions(_AsDict):
    """Hyper-parameters of `clipstore finetune` (the CLI's defaults)."""

    method: str = "mcip"
    epochs: int = 10
    batch_size: int = 64
    lr_backbone: float = 1e-5
    lr_head: float = 1e-4
    lr_text: float = 1e-5
    realign_epochs: int = 5
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    patience: int = 3
    captions: int = 5
    caption_threshold: float | None = None
    margin: float = 0.2
    scale: float = 30.0
    lambda_captions: float = 0.5
    lambda_labels: float = 0.5
    labels_from_folders: bool = False
    label_manifest: str | None = None
    label_field: str = "label"
    augment: bool = True
    max_centres: int = 16384
    lr_probe: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidOptionError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise InvalidOptionError("epochs must be at least 1 and batch_size at least 2")
