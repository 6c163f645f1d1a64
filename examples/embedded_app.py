"""clipstore embedded in a small application: a photo library that finds look-alikes and near-duplicates.

The app owns its own store (one folder beside its data), keeps it up to date with an incremental ingest on
start, and uses only the public API. Run it on any folder:

    python examples/embedded_app.py FOLDER [--store PATH] [--model SPEC] [--threshold 0.95]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import clipstore


@dataclass(frozen=True)
class LookAlikes:
    path: str
    matches: list[str]


class PhotoLibrary:
    """A photo folder with a clipstore store behind it."""

    def __init__(self, folder: Path, store: clipstore.Store):
        # The store records absolute paths: compare hits with the same form of each photo's path.
        self.folder = Path(os.path.abspath(os.path.expanduser(folder)))
        self.store = store

    @classmethod
    def open(cls, folder: Path, store_path: Path, model: str) -> "PhotoLibrary":
        return cls(folder, clipstore.connect(store_path, model=model))

    def refresh(self) -> clipstore.IngestReport:
        """Bring the store up to date with the folder (new, changed and deleted photos)."""
        return self.store.ingest(self.folder, prune=True)

    def look_alikes(self, photo: str | Path, threshold: float) -> LookAlikes:
        """Other photos at least `threshold` cosine-similar to `photo` (a path, relative or absolute), and its
        exact copies (other paths with the same bytes, which the store keeps as one image)."""
        photo = os.path.abspath(os.path.expanduser(photo))
        own_id = hashlib.sha256(Path(photo).read_bytes()).hexdigest()  # a store image id is its bytes' SHA-256
        hits = self.store.search_image(photo, k=10)
        copies = [path for path in self.store.image_paths(own_id) if path != photo]
        similar = [hit.path for hit in hits if hit.score >= threshold and hit.id != own_id]
        return LookAlikes(photo, copies + similar)

    def near_duplicate_groups(self, threshold: float) -> list[list[str]]:
        """Groups of photos that look alike (each photo in at most one group)."""
        seen: set[str] = set()
        groups = []
        for photo in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            if os.path.abspath(photo) in seen:
                continue
            try:
                alikes = self.look_alikes(photo, threshold)
            except clipstore.ClipstoreError:
                continue  # not an image: the refresh report already said so
            group = [alikes.path] + [path for path in alikes.matches if path not in seen]
            seen.update(group)
            if len(group) > 1:
                groups.append(group)
        return groups


def main() -> None:
    parser = argparse.ArgumentParser(description="Find look-alike photos in a folder.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--store", type=Path, default=Path("library.clipstore"))
    parser.add_argument("--model", default="clipstore-mini")
    parser.add_argument("--threshold", type=float, default=0.95)
    args = parser.parse_args()

    library = PhotoLibrary.open(args.folder, args.store, args.model)
    report = library.refresh()
    print(f"library: {library.store.count_images()} photos ({report.added} new, {len(report.failed)} unreadable)")
    for group in library.near_duplicate_groups(args.threshold):
        print("look-alikes:")
        for path in group:
            print(f"  {path}")


if __name__ == "__main__":
    main()
