"""The store's model: finetune, reembed, rollback, model relink."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

import clipstore
from clipstore.finetune.options import METHODS, FinetuneOptions

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
    store_option,
    store_options,
)

if TYPE_CHECKING:
    from clipstore.switch.reembed import ReembedReport


@click.command(short_help="Fine-tune the image encoder (MCIP or 2SFT).")
@store_options
@field_option(FinetuneOptions, "method", type=click.Choice(METHODS))
@field_option(FinetuneOptions, "epochs", type=click.IntRange(1))
@field_option(FinetuneOptions, "batch_size", type=click.IntRange(2))
@field_option(FinetuneOptions, "lr_backbone", type=click.FloatRange(min=0), help="Vision transformer blocks.")
@field_option(FinetuneOptions, "lr_head", type=click.FloatRange(min=0), help="Vision projection and margin centres.")
@field_option(FinetuneOptions, "lr_text", type=click.FloatRange(min=0), help="Text encoder (2SFT re-alignment).")
@field_option(FinetuneOptions, "realign_epochs", type=click.IntRange(1), help="2SFT stage 2 epochs.")
@field_option(FinetuneOptions, "captions", type=click.IntRange(0), help="Pseudo-captions per image from the bank.")
@field_option(FinetuneOptions, "caption_threshold", type=float,
              help="Minimum CLIP similarity of a pseudo-caption [default: none].")
@field_option(FinetuneOptions, "margin", type=click.FloatRange(0, 1), help="ArcMargin angular margin.")
@field_option(FinetuneOptions, "scale", type=click.FloatRange(min=1), help="ArcMargin logit scale.")
@field_option(FinetuneOptions, "lambda_captions", type=click.FloatRange(min=0))
@field_option(FinetuneOptions, "lambda_labels", type=click.FloatRange(min=0))
@field_option(FinetuneOptions, "labels_from_folders", help="Class label of an image = the name of its folder.")
@field_option(FinetuneOptions, "label_manifest", type=click.Path(dir_okay=False),
              help="CSV/TSV/JSONL with path and a label field.")
@field_option(FinetuneOptions, "label_field", help="Label field of the manifest (dotted for nested JSON).")
@negated_field_flag(FinetuneOptions, "augment", "--no-augment", help="No image rotations, crops and flips.")
@negated_field_flag(FinetuneOptions, "lr_probe", "--no-lr-probe",
                    help="Train at --lr-backbone/--lr-head as given, without first probing 1x, 10x and 100x of them.")
@field_option(FinetuneOptions, "seed", type=int)
@click.option("--apply", is_flag=True, help="Re-embed the store with the result and switch to it, if it beat the base on validation.")
@click.option("--force", is_flag=True, help="With --apply: switch even when validation did not improve.")
@click.option("--list", "list_models", is_flag=True, help="List the store's fine-tuned models and their validation results; train nothing.")
@quiet_option
@json_option
@clipstore_errors
def finetune(store_path, storage_options, model, apply, force, list_models, quiet, as_json, **fields) -> None:
    """Fine-tune the image encoder for image->image search, keeping text alignment (MCIP or 2SFT).

    The fine-tuned model is saved in the store; `clipstore reembed --model ID` (or --apply) switches to it.
    --apply switches only to a model that beat the base on validation, unless --force.
    """
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    if list_models:
        _list_finetuned(store.finetuned_models(), as_json)
        return
    options = options_from(FinetuneOptions, fields)
    with ProgressBar(enabled=show_progress(quiet)) as bar:
        report = store.finetune(options, apply=apply, force=force, progress=bar.update)
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(f"Fine-tuned model {report.model_id} ({report.method}) saved in {report.folder}")
    click.echo(f"  images: {report.train_images} train, {report.validation_images} validation; {report.classes} classes; "
               f"{report.captions_per_image:.1f} pseudo-captions per image")
    click.echo(f"  {report.validation_metric}: {report.validation_before:.4f} -> {report.validation_after:.4f}"
               f"{'' if report.improved else '  NOT IMPROVED'}")
    if report.switch is not None:
        _echo_switch(report.switch)
    elif not apply and report.improved:
        click.echo(f"Switch the store to it with: clipstore reembed --model {report.model_id}")
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)


def _list_finetuned(configs: list[dict], as_json: bool) -> None:
    rows = [
        {
            "id": config.get("id"),
            "created_at": config.get("created_at"),
            "method": config.get("method"),
            "metric": config.get("validation", {}).get("metric"),
            "before": config.get("validation", {}).get("before"),
            "after": config.get("validation", {}).get("after"),
            "improved": config.get("validation", {}).get("improved"),
        }
        for config in configs
    ]
    if as_json:
        print_json({"models": rows})
        return
    if not rows:
        click.echo("No fine-tuned models in this store. Make one with: clipstore finetune")
    for row in rows:
        scores = f"{row['metric']} {_score(row['before'])} -> {_score(row['after'])}"
        click.echo(f"{row['id']}  {row['created_at']}  {row['method']}  {scores}  {'improved' if row['improved'] else 'NOT improved'}")


def _score(value) -> str:
    return "?" if value is None else f"{value:.4f}"


@click.command(short_help="Re-embed with another model and switch atomically.")
@store_option
@click.option("--model", "target", required=True, metavar="SPEC|ID",
              help="The new model: a fine-tuned model of this store (id or folder) or a model spec (ARCH:TAG, ARCH:/path).")
@click.option("--drop-missing", is_flag=True, help="Leave out images whose files can no longer be read.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@quiet_option
@json_option
@clipstore_errors
def reembed(store_path, storage_options, target, drop_missing, batch_size, quiet, as_json) -> None:
    """Re-embed every image with another model and switch to it atomically (resumable; see rollback)."""
    store = clipstore.connect(store_path, storage_options=storage_options, create=False)
    with ProgressBar(enabled=show_progress(quiet)) as bar:
        report = store.reembed(target, drop_missing=drop_missing, batch_size=batch_size, progress=bar.update)
    if as_json:
        print_json(report.to_dict())
        return
    _echo_switch(report)


def _echo_switch(report: "ReembedReport") -> None:
    click.echo(f"The store now uses {report.model} (switched from {report.previous_model}): {report.images} images "
               f"({report.embedded} embedded now, {report.resumed} already embedded), {report.prompts_embedded} "
               "prompts re-embedded")
    for failure in report.dropped:
        click.echo(f"  dropped: {failure.path}: {failure.reason}")
    click.echo(f"Undo with: clipstore rollback (back to {report.previous_model})")


@click.command(short_help="Undo the last model switch.")
@store_option
@json_option
@clipstore_errors
def rollback(store_path, storage_options, as_json) -> None:
    """Undo the last model switch (re-embed): the previous model, vectors and file rows come back."""
    report = clipstore.connect(store_path, storage_options=storage_options, create=False).rollback()
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(f"Rolled back from {report.previous_model} to {report.model} (files table version {report.files_version}, tag {report.tag})")


@click.group(short_help="The store's model: relink a moved checkpoint.")
def model() -> None:
    """The store's model and where its checkpoint file is."""


@model.command("relink", short_help="Point the store at its moved checkpoint file.")
@click.argument("path", type=click.Path(dir_okay=False))
@store_option
@json_option
@clipstore_errors
def model_relink(path, store_path, storage_options, as_json) -> None:
    """Tell the store that the checkpoint file of its model moved to PATH (checked by SHA-256; remembered).

    Only for checkpoints outside the store: fine-tuned models inside it move with the store.
    """
    report = clipstore.connect(store_path, storage_options=storage_options, create=False).relink_model(path)
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(f"The store now loads {report.model} (SHA-256 {report.sha256[:12]}…; was {report.previous_path})")



COMMANDS = (finetune, reembed, rollback, model)
