"""Ingest: folders of images into the store.

- `walk`: finds image files (symlinks, loops, hidden files, unreadable folders).
- `imaging`: guarded decoding (format sniffing, decompression-bomb guard, EXIF orientation, colour modes).
- `run`: `FolderIngest`, the incremental, content-addressed, crash-safe ingest run; manifests of prompts.
"""
