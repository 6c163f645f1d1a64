"""What the two trainers (Model A heads in `clipstore.describe.train`, encoder fine-tuning in
`clipstore.finetune`) share.

- `loop`: `TrainingLoop` (AdamW, warm-up + cosine schedule, early stopping, resumable checkpoints), `EpochStats`.
- `runs`: `run_key` (a resumable run's identity).
- `images`: `load_training_image`.
- `augment`: image and text augmentations.
"""
