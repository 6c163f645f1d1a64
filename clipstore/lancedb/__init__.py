"""clipstore inside a LanceDB app: embedding functions for LanceDB's registry, and `describe` for an app's table.

    import lancedb
    import clipstore.lancedb              # registers "clipstore" and "clipstore-prompts" with LanceDB
    from lancedb.embeddings import get_registry

    clip = get_registry().get("clipstore").create(model="clipstore-mini")    # or store="path/to/a.clipstore"

- "clipstore" (`ClipstoreEmbeddings`): an image column (paths, file:// URIs or bytes) -> CLIP vectors; text
  and image queries (`table.search("a red dress")`, `table.search(PIL.Image.open(...))`).
- "clipstore-prompts" (`PromptEmbeddings`): a text column -> all-MiniLM-L6-v2, the prompt bank's space.
- `describe(table, store=..., column="prompt")`: a store's description of each row's image, written into
  columns of the app's table (`TableDescribeReport`).

This package is named after the library it plugs into and imports it absolutely: `import lancedb` anywhere
(here too) is LanceDB itself. Importing it imports LanceDB (its registry), not torch, open_clip or
sentence-transformers: models load when a function first embeds something.
"""

from __future__ import annotations

from clipstore.lancedb.describe_rows import DESCRIBE_ROWS_STAGE, TableDescribeReport, describe
from clipstore.lancedb.functions import IMAGE_FUNCTION, PROMPT_FUNCTION, ClipstoreEmbeddings, PromptEmbeddings

__all__ = [
    "DESCRIBE_ROWS_STAGE",
    "IMAGE_FUNCTION",
    "PROMPT_FUNCTION",
    "ClipstoreEmbeddings",
    "PromptEmbeddings",
    "TableDescribeReport",
    "describe",
]
