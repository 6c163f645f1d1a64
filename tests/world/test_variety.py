"""World v2: varied drawings that still show exactly their scene, short prompts that state only true
attributes, and the multi-positive pretraining objective built on them."""

from __future__ import annotations

import colorsys
import random

import numpy as np
import pytest

from clipstore.world import COLOURS, SHAPES, Scene, sample_scene
from clipstore.world.grammar import ATTRIBUTES, BACKGROUNDS, describe_partial, is_heldout_combination, sample_simple_scene
from clipstore.world.variety import render_varied, varied_colour


def test_varied_renders_are_deterministic_per_seed_and_vary_between_seeds():
    scene = Scene("star", "red", "large", 1, "center", "white", "plain", "filled", "solid")
    first = np.asarray(render_varied(scene, 96, random.Random(3)))
    assert np.array_equal(first, np.asarray(render_varied(scene, 96, random.Random(3))))
    others = [np.asarray(render_varied(scene, 96, random.Random(seed))) for seed in range(4, 12)]
    assert all(image.shape == (96, 96, 3) for image in others)
    assert len({image.tobytes() for image in others}) == len(others)


def test_v1_share_sends_that_share_of_images_to_the_world_v1_renderer_unchanged():
    from clipstore.world.render import render_scene

    scene = Scene("hexagon", "blue", "medium", 1, "top left", "beige", "striped", "filled", "spotted")

    def as_v1(seed):  # what the world-v1 renderer draws after render_varied's own coin toss
        rng = random.Random(seed)
        rng.random()
        return np.asarray(render_scene(scene, 96, rng))

    seeds = range(20)
    assert all(np.array_equal(np.asarray(render_varied(scene, 96, random.Random(s), v1_share=1.0)), as_v1(s)) for s in seeds)
    assert not any(np.array_equal(np.asarray(render_varied(scene, 96, random.Random(s), v1_share=0.0)), as_v1(s)) for s in seeds)


def _lab(rgb) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour: distances in it follow what people see."""
    c = np.asarray(rgb, float) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    f = np.where(xyz / np.array([0.95047, 1.0, 1.08883]) > 0.008856, f, 7.787 * xyz / np.array([0.95047, 1.0, 1.08883]) + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("name", sorted(COLOURS))
def test_a_varied_colour_stays_nearer_its_own_name_than_any_other(name):
    rng = random.Random(name)
    palette = {other: _lab(rgb) for other, rgb in COLOURS.items()}
    for _ in range(300):
        shade = _lab(varied_colour(name, rng))
        nearest = min(palette, key=lambda other: np.sum((palette[other] - shade) ** 2))
        assert nearest == name, (name, shade, nearest)


def test_the_object_keeps_its_colour_in_a_varied_render():
    """A large filled red circle on white: the most common saturated hue in the picture is red's."""
    scene = Scene("circle", "red", "large", 1, "center", "white", "plain", "filled", "solid")
    for seed in range(10):
        pixels = np.asarray(render_varied(scene, 128, random.Random(seed)), float) / 255
        centre = pixels[48:80, 48:80].reshape(-1, 3)
        hue, saturation, _ = colorsys.rgb_to_hsv(*np.median(centre, axis=0))
        assert saturation > 0.4 and min(hue, 1 - hue) < 0.06, seed


def test_partial_prompts_state_only_what_the_scene_shows():
    rng = random.Random(0)
    seen_left_out = set()
    for _ in range(400):
        scene = sample_scene(rng)
        text, stated = describe_partial(scene, rng)
        assert stated <= set(ATTRIBUTES) and "count" in stated and ({"shape", "colour"} & stated)
        named_colours = {name for name in COLOURS if f" {name} " in f" {text} " and name not in scene.background}
        if "colour" in stated:
            assert scene.colour in text.split()
        else:
            assert scene.colour not in named_colours
        words = set(text.replace(",", " ").split())
        named_shapes = {shape for shape in SHAPES if {shape, shape + "s", shape + "es"} & words}
        assert named_shapes <= {scene.shape}, text
        assert ("shape" in stated) == bool(named_shapes), text
        seen_left_out |= set(ATTRIBUTES) - stated
    assert seen_left_out >= {"size", "position", "background", "shape"}


def test_positive_pairs_match_images_to_every_prompt_they_satisfy():
    torch = pytest.importorskip("torch")
    from clipstore.world.pretrain import multi_positive_loss, positive_pairs, scene_codes

    red_circle = Scene("circle", "red", "large", 1, "center", "white", "plain", "filled", "solid")
    red_circle_small = Scene("circle", "red", "small", 1, "left", "black", "plain", "filled", "solid")
    blue_circle = Scene("circle", "blue", "large", 1, "center", "white", "plain", "filled", "solid")
    codes = torch.tensor([scene_codes(s) for s in (red_circle, red_circle_small, blue_circle)])
    full = torch.ones(len(ATTRIBUTES), dtype=torch.bool)
    colour_and_shape = torch.tensor([name in ("count", "shape", "colour") for name in ATTRIBUTES])
    stated = torch.stack([full, colour_and_shape, full])  # prompt 1 is "a red circle"
    positives = positive_pairs(codes, stated)
    assert positives.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # with the identity as positives it is CLIP's loss
    logits = torch.randn(3, 3)
    identity = torch.nn.functional.cross_entropy(logits, torch.arange(3)) + torch.nn.functional.cross_entropy(logits.T, torch.arange(3))
    assert torch.isclose(multi_positive_loss(logits, torch.eye(3)), identity / 2)


def test_a_v2_training_chunk_has_images_tokens_codes_and_stated_attributes():
    pytest.importorskip("open_clip")
    from clipstore.world.pretrain import render_chunk

    images, tokens, codes, stated = render_chunk((5, 6, 0, "train", (64, 96), 3, 1, 0.5, 0.3))
    assert images.shape == (6, 3, 64, 64) and images.dtype == np.uint8
    assert tokens.shape[:2] == (6, 3) and codes.shape == (6, len(ATTRIBUTES)) and stated.shape == (6, 3, len(ATTRIBUTES))
    assert stated[:, :2].all() and not stated[:, 2].all()  # two full descriptions, then a partial prompt
    again = render_chunk((5, 6, 0, "train", (64, 96), 3, 1, 0.5, 0.3))
    assert np.array_equal(images, again[0]) and np.array_equal(tokens, again[1])


def test_simple_scenes_are_one_plain_shape_on_a_light_background_and_keep_the_split():
    scenes = [sample_simple_scene(random.Random(seed), "train") for seed in range(400)]
    assert all(scene.count == 1 and scene.pattern == "plain" and scene.texture == "solid" for scene in scenes)
    assert not any(is_heldout_combination(scene.shape, scene.colour) for scene in scenes)
    light = [scene for scene in scenes if sum(BACKGROUNDS[scene.background]) > 3 * 140]
    assert len(light) >= 0.95 * len(scenes)  # white objects have nowhere light to go
    assert sum(scene.background == "white" for scene in scenes) > len(scenes) / 2
    assert {scene.shape for scene in scenes} == set(SHAPES) and {scene.size for scene in scenes} >= {"medium", "large"}
    assert all(is_heldout_combination(s.shape, s.colour) for s in (sample_simple_scene(random.Random(k), "heldout") for k in range(50)))


def test_same_label_loss_is_low_when_images_of_one_label_cluster():
    torch = pytest.importorskip("torch")
    from clipstore.world.pretrain import same_label_loss

    labels = torch.tensor([0, 0, 1, 1, 2])
    clustered = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0.99, 0.1, 0], [0, 1.0, 0], [0.1, 0.99, 0], [0, 0, 1.0]]), dim=-1)
    mixed = clustered[[0, 2, 1, 3, 4]]  # the same vectors, each pair of one label now far apart
    assert same_label_loss(clustered, labels) < same_label_loss(mixed, labels)
    assert same_label_loss(clustered, torch.tensor([0, 1, 2, 3, 4])) == 0  # no image shares its label


def test_a_resumed_run_continues_the_learning_rate_schedule_after_a_short_warm_up():
    from clipstore.training.loop import warmup_cosine
    from clipstore.world.pretrain import _resumed_lr

    lr_at = warmup_cosine(3000, 80)
    assert [_resumed_lr(lr_at, k, 0, 80) for k in (0, 500, 2999)] == [lr_at(0), lr_at(500), lr_at(2999)]
    resumed = [_resumed_lr(lr_at, k, 1000, 80) for k in range(200)]
    assert resumed[0] < resumed[40] < resumed[79] and resumed[0] < 0.02 * lr_at(1000)  # a re-warm-up from near zero
    assert resumed[79:] == [lr_at(1000 + k) for k in range(79, 200)]  # then exactly the schedule where it left off


def test_the_anchor_loss_is_zero_when_the_student_agrees_with_the_teacher_and_pulls_it_there():
    torch = pytest.importorskip("torch")
    from clipstore.world.pretrain import anchor_loss

    teacher = 20 * torch.eye(6) + torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    assert float(anchor_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(anchor_loss(teacher + 5.0, teacher)) == pytest.approx(0.0, abs=1e-5)  # a constant shift: same softmax
    student = torch.zeros(6, 6, requires_grad=True)  # knows nothing: every pair as likely
    before = anchor_loss(student, teacher)
    before.backward()
    with torch.no_grad():
        moved = student - 0.5 * student.grad
    assert before.item() > 1.0 and anchor_loss(moved, teacher).item() < before.item()
    assert float(anchor_loss(teacher.T, teacher)) > 0  # rows and columns both count


def test_a_grouped_anchor_batch_is_whole_groups_of_look_alikes_and_a_plain_one_is_random():
    torch = pytest.importorskip("torch")
    from clipstore.world.pretrain import anchor_index, hard_negative_groups

    codes = torch.tensor([[shape, colour, k] for shape in range(3) for colour in range(2) for k in range(5)])
    groups = hard_negative_groups(codes, "shape,colour")
    assert len(groups) == 6 and all(len(members) == 5 for members in groups)
    pick = anchor_index(groups, len(codes), 19, 4, torch.Generator().manual_seed(0))
    assert len(pick) == 19
    for start in range(0, 16, 4):  # four groups of four rows that agree on shape and colour, distinct within a group
        block = codes[pick[start : start + 4]]
        assert (block[:, :2] == block[0, :2]).all() and len(set(pick[start : start + 4].tolist())) == 4
    small = anchor_index([torch.tensor([7, 9])], 20, 8, 4, torch.Generator().manual_seed(0))
    assert set(small.tolist()) <= {7, 9}  # a group smaller than group_size is drawn with replacement
    plain = anchor_index(None, 20, 8, 4, torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randint(0, 20, (8,), generator=torch.Generator().manual_seed(0)))


@pytest.mark.slow
def test_a_tiny_v2_run_with_an_anchor_writes_loadable_weights(tmp_path):
    pytest.importorskip("torch")
    from safetensors import safe_open

    from clipstore.encoders.clip import ClipEncoder
    from clipstore.encoders.identity import resolve_model
    from clipstore.world.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        steps=3, batch_size=32, train_pairs=64, eval_pairs=32, eval_every=1000, render_sizes=(64,), workers=1,
        colour_groups=2, group_size=4, warmup_steps=1, anchor="clipstore-mini:world-v1", anchor_pool=32, anchor_batch=16,
        anchor_group_by="shape", anchor_group_size=4,
    )
    lines: list[str] = []
    summary = pretrain(tmp_path / "w.safetensors", config, log=lines.append)
    assert summary["steps_run"] == 3 and any(line.startswith("anchor: 32 world-v1 pairs") for line in lines)
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as weights:
        assert "'anchor': 'clipstore-mini:world-v1'" in weights.metadata()["config"]
    encoder = ClipEncoder(resolve_model(f"clipstore-mini:{tmp_path / 'w.safetensors'}"), device="cpu", precision="fp32")
    assert encoder.encode_texts(["a red circle"]).shape == (1, 256)


def test_hard_negative_groups_are_named_by_attributes_and_a_typo_fails_before_rendering(tmp_path):
    from clipstore.world.pretrain import PretrainConfig, group_attributes, pretrain

    assert group_attributes("colour") == [ATTRIBUTES.index("colour")]
    assert group_attributes("shape, colour") == [ATTRIBUTES.index("shape"), ATTRIBUTES.index("colour")]
    for bad in ("", "colour,flavour"):
        with pytest.raises(ValueError, match="group_by"):
            pretrain(tmp_path / "never.safetensors", PretrainConfig(group_by=bad, steps=2, train_pairs=8))
    assert not (tmp_path / "never.safetensors").exists()


def test_hard_negative_groups_partition_the_samples_by_the_named_attributes():
    import torch

    from clipstore.world.pretrain import hard_negative_groups, scene_codes

    rng = random.Random(2)
    scenes = [sample_scene(rng) for _ in range(300)]
    codes = torch.tensor([scene_codes(scene) for scene in scenes])
    for group_by, names in (("colour", ("colour",)), ("shape,colour", ("shape", "colour"))):
        groups = hard_negative_groups(codes, group_by)
        assert sorted(torch.cat(groups).tolist()) == list(range(len(scenes)))  # every sample in exactly one group
        keys = [{tuple(getattr(scenes[i], name) for name in names) for i in group.tolist()} for group in groups]
        assert all(len(key) == 1 for key in keys)  # a group shares the attributes
        assert len({next(iter(key)) for key in keys}) == len(groups)  # and no two groups share them
