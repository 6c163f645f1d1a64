"""What the two trainers (Model A heads and encoder fine-tuning) share.

- `augment`: image and text augmentations.
"""
