"""The prompt an image carries: what a generator wrote into it, or a caption file beside it.

Read, in this order: a PNG `parameters` text chunk as AUTOMATIC1111-style front ends write it (the positive
prompt only), a ComfyUI `prompt` workflow JSON with a plain text node, the EXIF ImageDescription or
UserComment, and finally a sidecar caption file `name.txt` next to the image (the common training-set layout).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

from PIL import Image

_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_USER_COMMENT = 0x9286
_EXIF_IFD = 0x8769
_MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class ImagePrompt:
    """A prompt and where it was found: png-parameters, comfyui, exif-description, exif-comment, sidecar, manifest."""

    text: str
    source: str


def prompt_from_image_bytes(data: bytes) -> ImagePrompt | None:
    """The prompt embedded in an image file's metadata, or None. Never raises for odd metadata."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(getattr(image, "text", None) or image.info or {})
            exif = image.getexif()
    except Exception:  # noqa: BLE001 - metadata is optional; decoding errors are reported elsewhere
        return None
    parameters = info.get("parameters")
    if isinstance(parameters, str) and (text := positive_prompt(parameters)):
        return ImagePrompt(text, "png-parameters")
    workflow = info.get("prompt")
    if isinstance(workflow, str) and (text := comfyui_prompt(workflow)):
        return ImagePrompt(text, "comfyui")
    description = exif.get(_EXIF_IMAGE_DESCRIPTION)
    if isinstance(description, str) and _clean(description):
        return ImagePrompt(_clean(description), "exif-description")
    try:
        comment = exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT)
    except Exception:  # noqa: BLE001
        comment = None
    if comment is not None and (text := _user_comment(comment)):
        return ImagePrompt(text, "exif-comment")
    return None


def prompt_from_sidecar(image_path: str) -> ImagePrompt | None:
    """The caption in `name.txt` beside `name.ext`, or None."""
    sidecar = os.path.splitext(image_path)[0] + ".txt"
    try:
        with open(sidecar, encoding="utf-8", errors="replace") as handle:
            return caption_prompt(handle.read(CAPTION_CHARS))
    except OSError:
        return None


CAPTION_CHARS = _MAX_PROMPT_CHARS * 2
"""How much of a caption file is read (characters; a reader of bytes reads up to 4 bytes a character)."""


def caption_prompt(text: str) -> ImagePrompt | None:
    """The prompt of a caption file's text (its first `CAPTION_CHARS` characters), or None when it holds none."""
    text = _clean(text[:CAPTION_CHARS])
    return ImagePrompt(text, "sidecar") if text else None


def positive_prompt(parameters: str) -> str:
    """The positive prompt of an AUTOMATIC1111 `parameters` text: everything before the negative prompt and
    the settings line (`Steps: …`)."""
    lines = []
    for line in parameters.splitlines():
        if line.startswith("Negative prompt:") or (line.startswith("Steps: ") and "Sampler" in line):
            break
        lines.append(line)
    return _clean("\n".join(lines))


def comfyui_prompt(workflow: str) -> str:
    """The text of the positive CLIPTextEncode node of a ComfyUI `prompt` JSON (API format), or "".

    The positive node is the one wired to a sampler's `positive` input; without a sampler, the only text
    node. A text input that is itself a link (not plain text) does not count.
    """
    try:
        nodes = json.loads(workflow)
    except (json.JSONDecodeError, TypeError):
        return ""
    if not isinstance(nodes, dict):
        return ""
    texts = {
        node_id: node["inputs"]["text"]
        for node_id, node in nodes.items()
        if isinstance(node, dict)
        and "TextEncode" in str(node.get("class_type", ""))
        and isinstance(node.get("inputs", {}).get("text"), str)
    }
    for node in nodes.values():
        positive = node.get("inputs", {}).get("positive") if isinstance(node, dict) else None
        if isinstance(positive, list) and positive and str(positive[0]) in texts:
            return _clean(texts[str(positive[0])])
    return _clean(next(iter(texts.values()))) if len(texts) == 1 else ""


def _user_comment(value: object) -> str:
    if isinstance(value, bytes):
        code, body = value[:8], value[8:]
        if code.startswith(b"UNICODE"):
            # Byte order is not recorded reliably; the encoding with fewer NULs in odd positions is right.
            text = body.decode("utf-16-be" if body[:1] == b"\x00" else "utf-16-le", errors="replace")
        else:
            text = body.decode("utf-8" if code.startswith(b"ASCII") or not code.strip(b"\x00") else "latin-1", errors="replace")
        return _clean(text)
    return _clean(value) if isinstance(value, str) else ""


def _clean(text: str) -> str:
    return " ".join(text.replace("\x00", " ").split())[:_MAX_PROMPT_CHARS]
