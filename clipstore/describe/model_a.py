"""Model A (seed 001 eq. 1-3): the CLIP vision tower refined by FC1 -> Norm1 -> FC2 -> Norm2.

    FC1_Out   = FC1(Image_Emb)                                   (1)
    Norm1_Out = Norm1(FC1_Out)                                   (2)
    Norm2_Out = Norm2(FC2(GELU(Norm1_Out)))
    Out       = mix * Norm1_Out + (1 - mix) * Norm2_Out          (3)

Image_Emb is the tower's L2-normalised CLIP image embedding (scaled by sqrt(dim) so the first layer sees unit
variance); the output lives in all-MiniLM-L6-v2's 384-d space, where the loss is 1 - cosine to MiniLM(prompt).
The GELU between Norm1 and FC2 keeps the two layers from collapsing into one linear map. Without a vision tower
(a head trained with --freeze-vision) the head reads the store's own image embeddings.

This module imports torch; the rest of clipstore imports it lazily.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipstore.describe.heads import HeadConfig

from clipstore.db.layout import HEAD_WEIGHTS_FILE


class ModelA(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 384, mix: float = 0.5, dropout: float = 0.1, visual: nn.Module | None = None):
        super().__init__()
        self.in_dim = in_dim
        self.mix = float(mix)
        self.visual = visual
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.norm1 = nn.LayerNorm(out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim)

    def head(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """Eq. 1-3 on CLIP image embeddings (n, in_dim) of any norm."""
        x = F.normalize(image_embedding.float(), dim=-1) * math.sqrt(self.in_dim)
        norm1 = self.norm1(self.fc1(self.dropout(x)))
        norm2 = self.norm2(self.fc2(F.gelu(norm1)))
        return self.mix * norm1 + (1.0 - self.mix) * norm2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (n, 3, H, W) through the vision tower and the head."""
        if self.visual is None:
            raise ValueError("this Model A has no vision tower; call head() with CLIP image embeddings")
        return self.head(self.visual(pixels))

    def vision_parameters(self) -> list[nn.Parameter]:
        return list(self.visual.parameters()) if self.visual is not None else []

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("visual.")]


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(prediction, target)."""
    return (1.0 - F.cosine_similarity(prediction, target, dim=-1)).mean()


def save_weights(model: ModelA, folder: str) -> None:
    from safetensors.torch import save_file

    state = {name: tensor.detach().float().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, os.path.join(folder, HEAD_WEIGHTS_FILE))


def load_model_a(folder: str, config: HeadConfig, visual: nn.Module | None) -> ModelA:
    """Rebuild a saved head (with `visual`, a fresh tower of the base architecture, when it was fine-tuned)."""
    from safetensors.torch import load_file

    model = ModelA(config.in_dim, config.out_dim, config.mix, 0.0, visual if config.vision_tuned else None)
    model.load_state_dict(load_file(os.path.join(folder, HEAD_WEIGHTS_FILE)))
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def predict_from_embeddings(model: ModelA, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Model A's unit-length predictions (n, 384) from stored CLIP image embeddings (frozen-tower heads)."""
    model.eval()
    out = [model.head(torch.from_numpy(np.ascontiguousarray(embeddings[i : i + batch_size], np.float32))) for i in range(0, len(embeddings), batch_size)]
    if not out:
        return np.zeros((0, model.fc1.out_features), np.float32)
    return F.normalize(torch.cat(out), dim=-1).numpy()


@torch.inference_mode()
def predict_from_pixels(model: ModelA, pixels: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Model A's unit-length predictions (n, 384) from preprocessed images (heads with a tuned tower)."""
    model.eval()
    dtype = next(model.visual.parameters()).dtype if model.visual is not None else torch.float32
    out = [model(pixels[i : i + batch_size].to(dtype)) for i in range(0, len(pixels), batch_size)]
    if not out:
        return np.zeros((0, model.fc1.out_features), np.float32)
    return F.normalize(torch.cat(out).float(), dim=-1).numpy()
