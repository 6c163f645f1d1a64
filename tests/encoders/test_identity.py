"""Model specs and identities: tagged specs, bad specs, checkpoint files identified by their sha256."""

from __future__ import annotations

import pytest

import clipstore
from clipstore.encoders.clip import ClipEncoder, load_clip_encoder
from clipstore.encoders.identity import DEFAULT_MODEL, ModelIdentity, resolve_model


def test_default_and_tagged_specs_resolve_without_downloading():
    identity = resolve_model(None)
    assert identity.spec == DEFAULT_MODEL
    assert (identity.architecture, identity.pretrained, identity.embed_dim, identity.image_size) == (
        "ViT-B-32",
        "laion2b_s34b_b79k",
        512,
        224,
    )
    assert ModelIdentity.from_json(identity.to_json()) == identity


@pytest.mark.parametrize(
    "spec, message",
    [
        ("ViT-B-99:openai", "Unknown model architecture"),
        ("ViT-B-32:no_such_tag", "Unknown pretrained tag"),
        ("ViT-B-32", "does not say which weights"),
        ("ViT-B-32:/no/such/file.pt", "does not exist"),
    ],
)
def test_bad_specs_say_what_to_do(spec, message):
    with pytest.raises(clipstore.ModelSpecError, match=message):
        resolve_model(spec)


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory):
    from safetensors.torch import save_file

    encoder = load_clip_encoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32")
    path = tmp_path_factory.mktemp("ckpt") / "mini.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(path))
    return path


def test_checkpoint_file_identity_is_its_sha256_and_loads_the_same_weights(mini_checkpoint):
    import hashlib

    identity = resolve_model(f"clipstore-mini:{mini_checkpoint}")
    assert identity.checkpoint_sha256 == hashlib.sha256(mini_checkpoint.read_bytes()).hexdigest()
    assert identity.pretrained is None
    from_file = ClipEncoder(identity, device="cpu", precision="fp32").encode_texts(["a red circle"])
    seeded = load_clip_encoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32").encode_texts(["a red circle"])
    assert float(from_file[0] @ seeded[0]) == pytest.approx(1.0, abs=1e-6)


def test_store_made_from_a_checkpoint_refuses_a_changed_file(mini_checkpoint, tmp_path, photo_folder):
    import shutil

    checkpoint = tmp_path / "model.safetensors"
    shutil.copyfile(mini_checkpoint, checkpoint)
    store = clipstore.connect(tmp_path / "s.clipstore", model=f"clipstore-mini:{checkpoint}")
    store.ingest(photo_folder)
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(clipstore.ModelMismatchError, match="Point --model at the original checkpoint"):
        ClipEncoder(store.model, device="cpu")
    with pytest.raises(clipstore.ModelMismatchError):
        clipstore.connect(tmp_path / "s.clipstore", model=f"clipstore-mini:{checkpoint}")
