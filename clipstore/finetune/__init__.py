"""One embedding for both searches: fine-tuning the image encoder (seed 003, MCIP and 2SFT).

- `options`: `FinetuneOptions` (every hyper-parameter, the CLI's defaults) and `METHODS`.
- `data`: the store's images as training data (`ImageSet`, `load_images`; labels from folders or a manifest).
- `captions`: MCIP's pseudo-captions (each image's own prompt plus its nearest bank prompts).
- `losses`: ArcMargin, multi-caption ArcMargin and InfoNCE.
- `metrics`: image->image mAP@k / R@1 and caption recall.
- `run`: the fine-tune run (`finetune`, `FinetuneReport`, `FinetuneEpoch`): stage 1 image encoder, 2SFT stage 2
  text re-alignment, checkpoints to resume.
- `registry`: the fine-tuned models saved in a store (`models/<id>/`): save, list, identity, and resolving an
  id / id prefix / folder / model spec to the model to switch to.
- `retrieval`: the retrieval benchmarks of `clipstore eval --retrieval` (image->image mAP, text->image R@k,
  zero-shot and k-NN accuracy).
"""
