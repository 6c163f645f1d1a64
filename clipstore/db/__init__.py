"""The store's LanceDB layer: what every feature shares and nothing else.

- `tables`: table and column names, Arrow schemas, settings keys and small LanceDB helpers (open the current
  images/prompts tables, read columns, vector columns as matrices, settings).
- `migrate`: the runner of the numbered migrations in `clipstore.migrations`.
- `locking`: the one-writer-at-a-time lock file of a store folder.
"""
