"""Describing images: train, heads, describe, eval."""

from __future__ import annotations

import json
import os

import click

import clipstore
from clipstore.paths import open_output
from clipstore.describe.options import TrainOptions

from clipstore.cli.common import (
    ProgressBar,
    clipstore_errors,
    field_option,
    json_option,
    negated_field_flag,
    options_from,
    print_json,
    quiet_option,
    show_progress,
    store_options,
)


@click.command(short_help="Train Model A and tune Model B and the ensemble.")
@store_options
@field_option(TrainOptions, "epochs", type=click.IntRange(1))
@field_option(TrainOptions, "batch_size", type=click.IntRange(1))
@field_option(TrainOptions, "lr_vision", type=click.FloatRange(min=0), help="Learning rate of the CLIP vision tower.")
@field_option(TrainOptions, "lr_fc", type=click.FloatRange(min=0, min_open=True), help="Learning rate of FC1/Norm1/FC2/Norm2.")
@field_option(TrainOptions, "weight_decay", type=click.FloatRange(min=0))
@field_option(TrainOptions, "warmup_fraction", "--warmup", type=click.FloatRange(0, 1), help="Warm-up share of the steps.")
@field_option(TrainOptions, "patience", type=click.IntRange(1), help="Early stopping: epochs without improvement.")
@field_option(TrainOptions, "freeze_vision", help="Train the head only, on CLIP embeddings of augmented views (fast on CPU).")
@field_option(TrainOptions, "mix", type=click.FloatRange(0, 1), help="Eq. 3: weight of Norm1_Out against Norm2_Out.")
@negated_field_flag(TrainOptions, "augment", "--no-augment", help="No image rotations, crops and flips.")
@field_option(TrainOptions, "views", type=click.IntRange(0), help="Augmented views per image (with --freeze-vision).")
@field_option(TrainOptions, "text_augment", type=click.IntRange(0), help="Prompt variants per pair (synonyms, phrase shuffle).")
@field_option(TrainOptions, "dedup_threshold", type=click.FloatRange(0, 1), help="Filter training prompts at this cosine.")
@click.option("--no-filter", is_flag=True, help="Train on every pair (no dedup of training prompts).")
@field_option(TrainOptions, "seed", type=int)
@quiet_option
@json_option
@clipstore_errors
def train(store_path, storage_options, model, no_filter, quiet, as_json, **fields) -> None:
    """Train Model A on the store's (image, prompt) pairs and tune Model B and the ensemble.

    The head is saved in the store with its validation scores; `clipstore describe` uses the newest one. An
    interrupted run resumes from its last epoch when started again with the same options.
    """
    if no_filter:
        fields["dedup_threshold"] = None
    options = options_from(TrainOptions, fields)
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    with ProgressBar(enabled=show_progress(quiet)) as bar:
        report = store.train(options, progress=bar.update)
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(f"Trained Model A head {report.head_id} ({'vision tower + head' if report.vision_tuned else 'head only'})")
    click.echo(f"  pairs: {report.train_pairs} train ({report.filtered_out} filtered as near-duplicates), {report.validation_pairs} validation")
    click.echo(f"  epochs: {report.epochs_run} (best {report.best_epoch}{', stopped early' if report.stopped_early else ''})")
    for name, value in report.validation.items():
        click.echo(f"  validation Avg-Cos {name:10s} {value:.4f}")
    click.echo(f"  ensemble alpha {report.ensemble_alpha:g}; Model B K={report.knn['k']} Distance_Dim={report.knn['distance_dim']:g}")
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)


@click.command(short_help="List the trained Model A heads, newest first.")
@store_options
@json_option
@clipstore_errors
def heads(store_path, storage_options, model, as_json) -> None:
    """List the trained Model A heads, newest first."""
    infos = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False).heads()
    if as_json:
        print_json({"heads": [info.to_dict() for info in infos]})
        return
    if not infos:
        click.echo("No trained Model A heads. Train one with: clipstore train")
    for info in infos:
        flag = "  STALE (trained on another encoder)" if info.stale else ""
        verdict = "" if info.beats_zero_shot else "  NOT better than zero-shot"
        click.echo(f"{info.id}  {info.created_at}  val Avg-Cos {info.validation_avg_cos:.4f}  ensemble "
                   f"{info.validation_ensemble:.4f}  zero-shot {info.validation_zero_shot:.4f}{verdict}  alpha {info.ensemble_alpha:g}"
                   f"  {'tower+head' if info.vision_tuned else 'head only'}{flag}")


@click.command(short_help="The prompts that best explain an image (or a folder).")
@click.argument("image", type=click.Path())
@store_options
@click.option("-k", "k", type=click.IntRange(1), help="Model B neighbours [default: the head's tuned K; without a head, chosen on the store (see knn_choice)].")
@click.option("--alpha", type=click.FloatRange(0, 1), help="Eq. 6 weight of Model A [default: the head's tuned alpha].")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Prompts to show.")
@click.option("--head", help="Model A head id (prefix) or folder [default: the newest].")
@click.option("--with-images", is_flag=True, help="Model B also uses the prompts of the most similar stored images.")
@click.option("--out", type=click.Path(dir_okay=False), help="For a folder: write one JSON line per image to this file.")
@quiet_option
@json_option
@clipstore_errors
def describe(image, store_path, storage_options, model, k, alpha, top, head, with_images, out, quiet, as_json) -> None:
    """The prompts that best explain IMAGE; for a folder, every image under it (with --out FILE)."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    if os.path.isdir(os.path.expanduser(image)):
        if not out:
            raise click.UsageError("IMAGE is a folder: give --out FILE for the JSON lines of its descriptions.")
        described = failed = 0
        with open_output(out) as lines, ProgressBar(enabled=show_progress(quiet)) as bar:
            for item in store.describe_folder(image, k=k, alpha=alpha, top=top, head=head, use_images=with_images, progress=bar.update):
                if isinstance(item, clipstore.FileFailure):
                    failed += 1
                    record = {"path": item.path, "error": item.reason}
                else:
                    described += 1
                    record = {"path": item.path, **item.description.to_dict()}
                lines.write(json.dumps(record, ensure_ascii=False) + "\n")
        if as_json:
            print_json({"described": described, "failed": failed, "out": os.path.abspath(out)})
        else:
            click.echo(f"Described {described} images, {failed} failed; wrote {out}")
        return
    description = store.describe(image, k=k, alpha=alpha, top=top, head=head, use_images=with_images)
    if as_json:
        print_json(description.to_dict())
        return
    if not description.prompts:
        click.echo("(the prompt bank is empty: no prompt text to show; see --json for the embedding)")
    for hit in description.prompts:
        click.echo(f"{hit.score:.4f}  {hit.text}")
    choice = description.knn_choice
    click.echo(f"({description.method}, alpha {description.alpha:g}, K {description.knn.k}{f' by {choice.rule}' if choice else ''})", err=True)
    if choice is not None and choice.rule != "head":
        click.echo(f"Model B: {choice.why}", err=True)
    for note in description.notes:
        click.echo(f"Note: {note}", err=True)


@click.command("eval", short_help="Avg-Cos table (eq. 8), or --retrieval benchmarks.")
@store_options
@click.option("--pairs", type=click.Path(dir_okay=False), help="Held-out (path, prompt) manifest (CSV/TSV/JSONL) [default: the store's test split].")
@click.option("--head", help="Model A head id (prefix) or folder [default: the newest].")
@click.option("--retrieval", is_flag=True, help="Retrieval benchmarks instead: image->image, text->image, zero-shot, k-NN.")
@click.option("--compare", multiple=True, metavar="SPEC|ID", help="With --retrieval: models to score beside the store's [default: the base model when the store uses one "
              "of its fine-tuned models, else its newest fine-tuned model].")
@click.option("--labels-from-folders", is_flag=True, help="With --retrieval: class label = folder name.")
@click.option("--label-manifest", type=click.Path(dir_okay=False), help="With --retrieval: CSV/TSV/JSONL with path and label.")
@click.option("--label-field", default="label", show_default=True)
@click.option("--template", help='With --retrieval: zero-shot prompt template [default: "a photo of a {label}"].')
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="With --retrieval: mAP@k and k-NN k.")
@quiet_option
@json_option
@clipstore_errors
def eval_(store_path, storage_options, model, pairs, head, retrieval, compare, labels_from_folders, label_manifest, label_field, template, k, quiet, as_json) -> None:
    """Avg-Cos (eq. 8) of zero-shot CLIP, the data-filter ablation, Model A, Model B and the ensemble
    (or, with --retrieval, the retrieval benchmarks of the store's model beside fine-tuned ones)."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    if retrieval:
        with ProgressBar(enabled=show_progress(quiet)) as bar:
            result = store.evaluate_retrieval(
                models=list(compare) or None, labels_from_folders=labels_from_folders, label_manifest=label_manifest,
                label_field=label_field, k=k, template=template, progress=bar.update,
            )
        if as_json:
            print_json(result.to_dict())
            return
        click.echo(f"{result.images} held-out labelled images, {result.classes} classes, {result.queries_with_prompts} text queries")
        width = max([len("model"), *(len(row.model) for row in result.rows)])
        click.echo(f"{'model':{width}s} mAP@{k:<3d} i2i R@1  t2i R@1  t2i R@10  zero-shot  k-NN")
        for row in result.rows:
            click.echo(f"{row.model:{width}s} {row.image_map:7.4f} {row.image_r1:8.4f} {row.text_r1:8.4f} {row.text_r10:9.4f} {row.zero_shot_accuracy:10.4f} {row.knn_accuracy:6.4f}")
        return
    with ProgressBar(enabled=show_progress(quiet)) as bar:
        report = store.evaluate(pairs=pairs, head=head, progress=bar.update)
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(f"Avg-Cos on {report.rows[0].n if report.rows else 0} held-out pairs ({report.pairs}):")
    width = max((len(row.name) for row in report.rows), default=10)
    for row in report.rows:
        click.echo(f"  {row.name:{width}s}  {row.avg_cos:.4f}")
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)



COMMANDS = (train, heads, describe, eval_)
