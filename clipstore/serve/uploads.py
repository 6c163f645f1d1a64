"""Query images uploaded to the page, held for a while so that typing a text beside one does not send or embed
it again: each is decoded once (with ingest's safeguards), embedded once, and kept under a token (the SHA-256
of its bytes) with a small preview, the newest `capacity` of them."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipstore.imaging import load_image
from clipstore.serve.images import jpeg

if TYPE_CHECKING:
    import numpy as np

    from clipstore.store.facade import Store

PREVIEW_SIZE = 128


@dataclass(frozen=True)
class Upload:
    """An uploaded query image: its token, name, size and format, its embedding (d,) and a JPEG preview as a
    data: URL."""

    token: str
    name: str
    width: int
    height: int
    format: str
    vector: "np.ndarray"
    preview: str

    def to_dict(self) -> dict:
        return {"token": self.token, "name": self.name, "width": self.width, "height": self.height, "format": self.format}


class Uploads:
    """The uploaded query images of one server."""

    def __init__(self, store: "Store", max_megapixels: float, capacity: int = 32):
        self.store = store
        self.max_megapixels = max_megapixels
        self.capacity = capacity
        self._held: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, name: str) -> Upload:
        """Decode, embed and hold an upload; InvalidImageError (with the reason) for what is not an image."""
        token = hashlib.sha256(data).hexdigest()
        held = self.get(token)
        if held is not None:
            return held
        decoded = load_image(data, max_megapixels=self.max_megapixels, min_side=self.store.model.decode_min_side)
        vector = self.store.embed_image(decoded.image, max_megapixels=self.max_megapixels)
        preview = "data:image/jpeg;base64," + base64.b64encode(jpeg(decoded.image, PREVIEW_SIZE, self.max_megapixels)).decode()
        upload = Upload(token, name, decoded.width, decoded.height, decoded.format, vector, preview)
        with self._lock:
            self._held[token] = upload
            while len(self._held) > self.capacity:
                self._held.popitem(last=False)
        return upload

    def get(self, token: str) -> Upload | None:
        """The upload held under `token`, or None (never uploaded, or pushed out by newer ones)."""
        with self._lock:
            upload = self._held.get(token)
            if upload is not None:
                self._held.move_to_end(token)
            return upload
