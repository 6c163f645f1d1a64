"""Describing images: the prompt that best explains an image (seed 001).

- `model_a`: the CLIP vision tower + FC1->Norm1->FC2->Norm2 head (eq. 3).
- `model_b`: weighted KNN over the prompt bank (eq. 4-5).
- `heads`: trained Model A heads saved in the store, and choosing one.
- `pairs`: the store's (image, prompt) pairs and their fixed train/validation/test split.
- `train`: training Model A, tuning Model B and the ensemble's alpha (eq. 6).
- `evaluate`: the Table-1 Avg-Cos comparison (eq. 8).
- `describer`: `Describer`, the ensemble at query time.
"""
