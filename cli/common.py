"""What every command shares: the store/model/json options, options made from an options dataclass, the
error handling, output helpers and the one progress bar."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from typing import Any, Callable

import click

from clipstore.errors import ClipstoreError
from clipstore.paths import STORE_ENV

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def store_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--store PATH` (a folder or an object-store URI) and the repeatable `--storage-option KEY=VALUE`, passed to
    `clipstore.connect(store_path, storage_options=storage_options, storage_options=storage_options)`."""
    func = click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        metavar="KEY=VALUE",
        callback=_storage_options,
        help="For a store on object storage: a LanceDB storage option, e.g. aws_endpoint=http://127.0.0.1:9000 or "
        "allow_http=true (repeatable; AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ... are read from the environment too).",
    )(func)
    return click.option(
        "--store",
        "store_path",
        envvar=STORE_ENV,
        metavar="PATH",
        help=f"Store folder, or object-store URI such as s3://bucket/photos.clipstore [default: ${STORE_ENV} if "
        f"set, else {_default_store_hint()}].",
    )(func)


def _storage_options(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    """`KEY=VALUE` pairs as a dict (None when none was given); anything else is a usage error."""
    options = {}
    for value in values:
        key, separator, setting = value.partition("=")
        if not separator or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE (e.g. aws_region=us-east-1).", ctx, param)
        options[key.strip()] = setting
    return options or None


def _default_store_hint() -> str:
    """The per-user default store path as help text shows it (home as ~)."""
    import os

    from clipstore.paths import user_default_store_path

    path = user_default_store_path()
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--model",
        "model",
        envvar="CLIPSTORE_MODEL",
        metavar="SPEC",
        help="CLIP model: ARCH:TAG (default for a new store: ViT-B-32:laion2b_s34b_b79k), ARCH:/path/to/checkpoint, "
        "or clipstore-mini (offline). For an existing store it must match the store's model.",
    )(func)
    return store_option(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)


def quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(func)


# --- options made from the fields of an options dataclass (TrainOptions, FinetuneOptions, IngestOptions) ---------


def field_default(options: type, name: str) -> Any:
    """The default of field `name` of the dataclass `options` (the one place that default is written)."""
    field = {field.name: field for field in dataclasses.fields(options)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{options.__name__}.{name} has no default for a command-line option to show")


def field_option(options: type, name: str, *param_decls: str, **attrs: Any) -> Decorator:
    """A click option for field `name` of the options dataclass `options`, with the field's default (shown in
    --help for values, not for flags or None). `param_decls` default to `--field-name`; the parameter is always named
    after the field, so `options_from(options, params)` finds it."""
    default = field_default(options, name)
    decls = param_decls or (f"--{name.replace('_', '-')}",)
    if isinstance(default, bool):
        attrs.setdefault("is_flag", True)
    elif default is not None:
        attrs.setdefault("show_default", True)
    return click.option(*decls, name, default=default, **attrs)


def negated_field_flag(options: type, name: str, flag: str, **attrs: Any) -> Decorator:
    """A `--no-...` flag that turns off the boolean field `name` (true by default) of the options dataclass."""
    if field_default(options, name) is not True:
        raise TypeError(f"{flag} turns off {options.__name__}.{name}, whose default must be True")
    return click.option(flag, name, is_flag=True, flag_value=False, default=True, **attrs)


def options_from(options: type, params: dict[str, Any], **overrides: Any) -> Any:
    """An `options` dataclass built from the command's parameters named after its fields (plus `overrides`)."""
    names = {field.name for field in dataclasses.fields(options)}
    return options(**{name: value for name, value in params.items() if name in names}, **overrides)


# --- errors ---------------------------------------------------------------------------------------------------


def clipstore_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors (`ClipstoreError`) become one `Error:` line and exit status 1. Any other exception is a
    bug and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            exit_reader_gone()
        except ClipstoreError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def exit_reader_gone() -> None:
    """The reader of our output went away (`clipstore search ... | head -1`): stop quietly, as Unix tools do
    when SIGPIPE ends them (status 141), with no message and no error when Python flushes stdout at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (e.g. a test runner)
        pass
    raise SystemExit(141)


# --- output ---------------------------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def echo_first(lines: list[str], limit: int = 20) -> None:
    """Print the first `limit` lines of a list, then how many were left out."""
    for line in lines[:limit]:
        click.echo(line)
    if len(lines) > limit:
        click.echo(f"  … and {len(lines) - limit} more (use --json for all)")


def show_progress(quiet: bool) -> bool:
    """A progress bar is drawn unless --quiet, and only for a person watching stderr."""
    return not quiet and sys.stderr.isatty()


class ProgressBar:
    """A tqdm bar on stderr for the library's `progress(stage, done, total)` callbacks: a new bar for each
    stage; does nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._stage: str | None = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._bar is None or stage != self._stage:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr, dynamic_ncols=True)
            self._stage = stage
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()
