"""Model specs, identities, checkpoints, offline errors and the encoders (bf16 vs fp32 agreement, MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

import clipstore
from clipstore.encoders.clip import ClipEncoder, load_clip_encoder, resolve_precision
from clipstore.encoders.identity import DEFAULT_MODEL, ModelIdentity, resolve_model
from image_factory import pattern_image


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


def test_offline_pretrained_download_fails_with_the_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(clipstore.ModelUnavailableError) as excinfo:
        ClipEncoder(resolve_model("RN50:openai"), device="cpu")
    message = str(excinfo.value)
    assert "offline" in message and "clipstore-mini" in message and "RN50:/path/to/weights" in message


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


def test_bf16_embeddings_agree_with_fp32(monkeypatch):
    """The check behind using bf16 on bf16-capable CPUs: cosine >= 0.999 on every image and text."""
    identity = resolve_model("clipstore-mini")
    images = [pattern_image(seed, size=(160, 120)) for seed in range(24)]
    fp32 = ClipEncoder(identity, device="cpu", precision="fp32")
    bf16 = ClipEncoder(identity, device="cpu", precision="bf16")
    image_agreement = np.sum(fp32.encode_images(images) * bf16.encode_images(images), axis=1)
    texts = ["a red circle", "two small blue squares on a striped background", "a green triangle sketch"]
    text_agreement = np.sum(fp32.encode_texts(texts) * bf16.encode_texts(texts), axis=1)
    assert image_agreement.min() >= 0.999
    assert text_agreement.min() >= 0.999


def test_precision_auto_picks_bf16_only_where_it_pays(monkeypatch):
    monkeypatch.setattr("clipstore.encoders.clip.cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr("clipstore.encoders.clip.cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")


def test_minilm_embeds_paraphrases_close_and_unrelated_text_far():
    from clipstore.encoders.minilm import MINILM_DIM, load_minilm_encoder

    encoder = load_minilm_encoder()
    vectors = encoder.encode(["a red circle on a white background", "a crimson disc on white", "stock market report"])
    assert vectors.shape == (3, MINILM_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert load_minilm_encoder() is encoder


def test_reduced_scale_jpeg_decoding_keeps_embeddings(tmp_path):
    """Ingest decodes big JPEGs at reduced DCT scale; the embedding must stay what a full decode gives."""
    import io

    from clipstore.ingest.imaging import decode_image

    encoder = load_clip_encoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32")
    agreement = []
    for seed in range(8):
        buffer = io.BytesIO()
        pattern_image(seed, size=(1600, 1200)).save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
        full = decode_image(data).image
        reduced = decode_image(data, min_side=encoder.decode_min_side).image
        assert reduced.size[0] < full.size[0]
        vectors = encoder.encode_images([full, reduced])
        agreement.append(float(vectors[0] @ vectors[1]))
    assert min(agreement) >= 0.99
