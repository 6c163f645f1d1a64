"""Switching the store's model: re-embed every image atomically, roll back, and find moved checkpoints.

- `reembed`: staged, resumable re-embedding; one-commit switch; rollback to the previous tables.
- `locations`: where a store finds its models' checkpoint files (relative in-store paths, `relink`).
"""
