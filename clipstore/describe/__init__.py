"""Describing images: the prompt that best explains an image (seed 001). One module per concept:

- `pairs`: the store's (image, prompt) pairs and their fixed train / validation / test split (`Pairs`,
  `load_pairs`, `split_for`).
- `model_a`: the CLIP vision tower + FC1->Norm1->FC2->Norm2 head (eq. 1-3): `ModelA`, its fits
  (`fit_frozen_head`, `fit_tuned_tower`), predictions (`predict_pairs`, ...) and weights file. Imports torch.
- `model_b`: weighted KNN over the prompt bank (eq. 4-5): `KnnParams`, `predict`, neighbour search (LanceDB
  `bank_neighbours`, in-memory `BankView` / `knn_candidates`), `predict_for_image`, and K / Distance_Dim tuning
  (`tune_knn`).
- `ensemble`: eq. 6 (`blend`), alpha tuning (`tune_alpha`) and eq. 8, the Avg-Cos every part is scored by
  (`avg_cos`).
- `heads`: trained heads saved in the store (`HeadInfo`, `HeadConfig`, `list_heads`, `save_head`,
  `load_head_model`) and `choose_head`, the one choice of head that describe and eval share.
- `options`: `TrainOptions`, what `clipstore train` is asked to do (light: the command line imports it).
- `train`: `clipstore train` (`TrainReport`, `train_head`; `TrainOptions` from `options`).
- `evaluate`: `clipstore eval`, the Table-1 Avg-Cos comparison (`evaluate`, `EvalReport`, `EvalRow`).
- `describer`: `Describer`, the ensemble at query time (`Description`, `DescribedFile`, `describe_paths`).
"""
