"""One public surface: every result, options class and error is importable from `clipstore`, every error lives in
`clipstore.errors`, and every result's `to_dict()` is JSON-ready (numpy values become lists/numbers, NaN null)."""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest

import clipstore
from clipstore.errors import ClipstoreError
from clipstore.results import _AsDict

README = Path(__file__).resolve().parent.parent / "README.md"


def _import_every_module() -> list[types.ModuleType]:
    """Every module of the installed package, `clipstore.cli` and `clipstore.migrations` included."""
    names = {info.name for info in pkgutil.walk_packages(clipstore.__path__, "clipstore.")}
    names |= {"clipstore.cli", "clipstore.migrations"}
    for package in ("clipstore.cli", "clipstore.migrations"):
        names |= {info.name for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}.")}
    return [importlib.import_module(name) for name in sorted(names) if not name.endswith(".__main__")]  # those run the CLI


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found)) if found else found


def _exported() -> dict[str, object]:
    return {name: getattr(clipstore, name) for name in clipstore.__all__}


def _exported_dataclasses() -> list[type]:
    return [value for value in _exported().values() if isinstance(value, type) and dataclasses.is_dataclass(value)]


def _public_types_in(annotation) -> set[type]:
    """The clipstore classes an annotation names (through list[...], Iterator[...], X | Y, ...)."""
    if isinstance(annotation, type) and annotation.__module__.startswith("clipstore."):
        return {annotation}
    return set().union(*(_public_types_in(arg) for arg in typing.get_args(annotation)))


# --- what is exported -----------------------------------------------------------------------------------------


def test_every_exported_name_resolves_and_is_listed_once():
    assert len(clipstore.__all__) == len(set(clipstore.__all__))
    for name, value in _exported().items():
        assert getattr(value, "__name__", name) == name
    assert set(clipstore.__all__) <= set(dir(clipstore))


def test_importing_the_surface_stays_light():
    code = (
        "import sys, clipstore; names = clipstore.__all__, dir(clipstore); "
        "print([m for m in ('torch', 'open_clip', 'lancedb', 'pyarrow', 'numpy', 'sentence_transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_ray_is_imported_only_by_a_distributed_ingest(tmp_path):
    code = (
        "import sys, clipstore, clipstore.store.facade, clipstore.ingest.distributed, clipstore.cli; "
        "clipstore.RayOptions(); print('ray' in sys.modules)"
    )
    # cwd: not the checkout, whose source tree would shadow the installed package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert out == "False"


def test_every_result_class_is_exported():
    _import_every_module()
    results = {cls for cls in _subclasses(_AsDict) if cls.__module__.startswith("clipstore.")}
    missing = sorted(cls.__qualname__ for cls in results if getattr(clipstore, cls.__name__, None) is not cls)
    assert not missing, f"results not importable from clipstore: {missing}"


def test_every_type_a_store_method_returns_is_exported():
    from clipstore.store.facade import Store

    module = sys.modules[Store.__module__]
    namespace = {**vars(module), **_exported(), "Iterator": typing.Iterator}
    returned: set[type] = set()
    for name, member in vars(Store).items():
        function = member.fget if isinstance(member, property) else member
        if name.startswith("_") or not inspect.isfunction(function) or "return" not in function.__annotations__:
            continue
        annotation = function.__annotations__["return"]
        while isinstance(annotation, str):  # postponed annotations: '"TrainReport"' is a string of a string
            annotation = eval(annotation, namespace)
        returned |= _public_types_in(annotation)
    assert {"TrainReport", "Description", "DescribedFile", "ReembedReport", "RetrievalReport"} <= {cls.__name__ for cls in returned}
    missing = sorted(cls.__qualname__ for cls in returned if getattr(clipstore, cls.__name__, None) is not cls)
    assert not missing, f"Store methods return types not importable from clipstore: {missing}"


def test_options_classes_are_exported():
    for name in ("IngestOptions", "TrainOptions", "FinetuneOptions"):
        assert dataclasses.is_dataclass(getattr(clipstore, name)) and name in clipstore.__all__


def test_every_type_in_the_readme_python_api_is_importable_from_clipstore():
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Python API")
    section = re.sub(r"```.*?```", "", text[start : text.index("\n## ", start + 1)], flags=re.S)
    names = {
        name
        for span in re.findall(r"`([^`\n]+)`", section)
        for name in re.findall(r"(?<![\w.'\"])([A-Z]\w*[a-z]\w*)(?![\w'\":])", span)  # not `Error:` output
        if not hasattr(builtins, name)
    }
    assert {"Store", "Description", "TrainReport", "PromptFileError", "ReembedError"} <= names
    missing = sorted(name for name in names if name not in clipstore.__all__ or not hasattr(clipstore, name))
    assert not missing, f"README names types that `clipstore` does not export: {missing}"


# --- errors ---------------------------------------------------------------------------------------------------


def test_every_error_is_defined_in_errors_and_exported():
    _import_every_module()
    errors = {cls for cls in _subclasses(ClipstoreError) if cls.__module__.startswith("clipstore")} | {ClipstoreError}
    elsewhere = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in errors if cls.__module__ != "clipstore.errors")
    assert not elsewhere, f"define these in clipstore/errors.py: {elsewhere}"
    assert sorted(cls.__name__ for cls in errors if getattr(clipstore, cls.__name__, None) is not cls) == []
    for name, value in _exported().items():
        if name.endswith("Error"):
            assert issubclass(value, ClipstoreError) and value.__module__ == "clipstore.errors", name


def test_moved_errors_keep_their_old_import_paths():
    from clipstore.prompts.files import PromptFileError
    from clipstore.switch.reembed import ReembedError

    assert PromptFileError is clipstore.PromptFileError and ReembedError is clipstore.ReembedError


# --- to_dict --------------------------------------------------------------------------------------------------


def _sample(annotation, flavour: str):
    """A value of the annotated type; "numpy" puts numpy scalars and arrays where floats go, "nan" puts NaN."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(arg for arg in args if arg is not type(None)), flavour)
    if origin is tuple:
        return (_sample(args[0], flavour), _sample(args[0], flavour))
    if origin in (list, typing.List):
        return [_sample(args[0], flavour)]
    if origin is dict or annotation is dict:
        return {"a": _sample(args[1] if args else typing.Any, flavour), "b": None}
    if annotation in (float, typing.Any):
        return np.float32(0.25) if flavour == "numpy" else float("nan")
    if annotation is np.ndarray:
        return np.array([0.5, float("nan") if flavour == "nan" else -0.5], np.float32)
    if annotation is bool:
        return np.bool_(True) if flavour == "numpy" else True
    if annotation is int:
        return np.int64(3) if flavour == "numpy" else 3
    if annotation is str:
        return "text"
    if dataclasses.is_dataclass(annotation):
        return _instance(annotation, flavour)
    raise AssertionError(f"no sample for {annotation!r}")


def _instance(cls: type, flavour: str):
    if cls.__name__.endswith("Options"):  # they validate their fields: the defaults are the realistic instance
        return cls()
    if cls is clipstore.ModelIdentity:  # validated too; stored in table metadata, so made by resolve_model only
        from clipstore.encoders.identity import resolve_model

        return resolve_model("clipstore-mini")
    hints = typing.get_type_hints(cls, localns=_exported())
    return cls(**{f.name: _sample(hints[f.name], flavour) for f in dataclasses.fields(cls) if f.init})


@pytest.mark.parametrize("flavour", ["numpy", "nan"])
@pytest.mark.parametrize("cls", _exported_dataclasses(), ids=lambda cls: cls.__name__)
def test_every_exported_result_is_frozen_and_its_to_dict_is_json_ready(cls, flavour):
    assert cls.__dataclass_params__.frozen
    data = _instance(cls, flavour).to_dict()
    assert isinstance(data, dict) and data
    text = json.dumps(data, allow_nan=False)  # raises on NaN and on numpy values
    assert json.loads(text) == data  # only JSON types: lists, not tuples; plain numbers; None for NaN


def test_a_described_file_is_the_record_describe_json_prints():
    description = _instance(clipstore.Description, "numpy")
    record = clipstore.DescribedFile("img/a.png", description).to_dict()
    assert record == {"path": "img/a.png", **description.to_dict()}
    assert record["embedding"] == [0.5, -0.5] and "parts" not in record
    assert clipstore.DescribedFile("a.png", description).to_dict(parts=True)["parts"]["a"] == [0.5, -0.5]
