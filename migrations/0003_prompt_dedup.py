"""The dedup migration: keep the prompt bank free of near-duplicates (cosine >= 0.85 on MiniLM embeddings).

Applying it de-duplicates the existing prompt rows (in insertion order, the earliest wins) and records the
threshold in `_clipstore_settings` (key `prompt_dedup_threshold`); from then on every insert path enforces
it, duplicates within one batch included. Idempotent: a bank that is already free of near-duplicates is
left as it is.
"""

from clipstore.prompts import DEDUP_SETTING, dedup_existing_prompts
from clipstore.dedup import DEFAULT_THRESHOLD
from clipstore import tables


def apply(context) -> None:
    dedup_existing_prompts(context.db, DEFAULT_THRESHOLD)
    tables.write_setting(context.db, DEDUP_SETTING, str(DEFAULT_THRESHOLD))
