"""The `clipstore` command line: a thin layer over the Python API (installed as `clipstore.cli`).

Each command opens the store, makes one Store call, and renders the result as text or, with `--json`, as
JSON on stdout. Library errors (`ClipstoreError`) become one line on stderr and exit status 1; any other
exception is a bug and keeps its traceback.

The commands live in one module per group: `images` (ingest, search, similar, index, info, migrate, demo, world),
`prompts`, `describe` (train, heads, describe, eval), `models` (finetune, reembed, rollback, model) and `serve`
(the web page);
`common` holds what they share.
"""

from __future__ import annotations

import click

import clipstore

from clipstore.cli import describe, images, models, prompts, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(clipstore.__version__, prog_name="clipstore")
def main() -> None:
    """clipstore: turn folders of images into a searchable LanceDB store.

    \b
    clipstore demo                         try it offline: render, ingest and search sample images
    clipstore ingest ~/photos              embed every image under a folder (incremental)
    clipstore ingest s3://b/photos --ray auto   the same on a Ray cluster, from object storage
    clipstore search "a dog on a beach"    text -> image search
    clipstore similar ~/photos/dog.jpg     image -> image search
    clipstore index                        build or update the vector index searches use
    clipstore info                         where the store is, counts, model, migrations
    clipstore gc                           delete files no table version names (killed distributed ingests)
    clipstore migrate --list               applied and pending schema migrations
    clipstore prompts add prompts.txt      the prompt bank (also: remove, count, list, search)
    clipstore train                        train Model A on images that carry prompts
    clipstore heads                        the trained Model A heads
    clipstore describe IMAGE               the prompts that best explain an image
    clipstore eval                         Avg-Cos of zero-shot, Model A, Model B, ensemble
    clipstore finetune                     one embedding for image->image and text->image (MCIP)
    clipstore reembed --model ID           switch the store to another model, atomically
    clipstore rollback                     undo the last switch
    clipstore model relink PATH            tell the store where its moved checkpoint file is
    clipstore world render OUT             render-world images with their prompts (test data)
    clipstore serve                        a local web page to search, browse and describe the store

    \b
    Exit status: 0 on success, 1 for an error (one `Error:` line saying what to do), 2 for a command-line
    usage mistake (click's usage message), 141 when the reader of the output goes away (`| head`).
    """



for _module in (images, prompts, describe, models, serve):
    for _command in _module.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
