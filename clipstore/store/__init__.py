"""The Store: one folder of LanceDB tables and the facade over every feature.

- `facade`: `connect(path, ...)` opens or creates a store; `Store` composes ingest, search, the prompt bank,
  describe, fine-tuning and the model switch. It is the only module that imports them all.
"""
