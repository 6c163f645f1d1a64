"""Ingest: folders of images into the store.

- `walk`: finds image files (symlinks, loops, hidden files, unreadable folders).
- `run`: `FolderIngest`, the incremental, content-addressed, crash-safe ingest run; manifests of prompts.
"""
