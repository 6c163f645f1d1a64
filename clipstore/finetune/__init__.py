"""One embedding for both searches: fine-tuning the image encoder (seed 003, MCIP and 2SFT).

- `run`: options, data, pseudo-captions, losses, metrics, the training run and the registry of saved models.
- `retrieval`: the retrieval benchmarks (image->image mAP, text->image R@k, zero-shot and k-NN accuracy).
"""
