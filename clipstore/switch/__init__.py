"""Switching the store's model: re-embed every image atomically, roll back, and find moved checkpoints.

- `reembed`: staged, resumable re-embedding and the one-commit switch (`reembed`, `ReembedReport`).
- `history`: what each switch records for its rollback (the `model_history` / `model_rollbacks` settings and
  the `clipstore-switch-<n>` tags).
- `rollback`: undo the last switch (`rollback`, `RollbackReport`).
- `locations`: where a store finds its models' checkpoint files (relative in-store paths, `relink`).
"""
