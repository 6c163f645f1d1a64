"""The prompt bank: a de-duplicated corpus of prompts with CLIP-text and all-MiniLM-L6-v2 embeddings.

- `bank`: `PromptBank`, the one insert gate (dedup at the store's threshold), removal, listing, search.
- `dedup`: the near-duplicate algorithm (exact blocks, or an IVF index for large banks).
- `files`: reading prompt files (.txt, .csv/.tsv, .jsonl/.json, .parquet), judged by their content.
- `image_prompts`: prompts that come with images (PNG text chunks, EXIF, sidecar captions).
"""
