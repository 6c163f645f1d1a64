"""clipstore's numbered schema migrations (installed as `clipstore.migrations`). See clipstore/migrate.py."""
