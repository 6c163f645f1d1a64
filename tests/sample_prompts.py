"""Prompt texts the tests share: RED_PARAPHRASE is a MiniLM near-duplicate (cosine >= 0.85) of RED; the others are
far from each other."""

RED = "a large red circle on a plain white background"
RED_PARAPHRASE = "a big red circle on a plain white backdrop"
BLUE = "three small blue squares scattered on a striped grey background"
OTHER = "a stock market report with rising charts"
