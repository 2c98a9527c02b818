"""The procedural demo data: contract, determinism and the properties the analyses rely on."""

from __future__ import annotations

import numpy as np
import torch.utils.data

import vitlens_widgets as vl
from vitlens_widgets.data import BACKGROUND_NAMES, ShapesDataset, patch_fraction
from vitlens_widgets.data.shapes import HABITATS


def test_shapes_contract():
    batch = vl.data.shapes(300, seed=0)
    assert batch.images.shape == (300, 64, 64, 3) and batch.images.dtype == np.uint8
    assert batch.labels.shape == (300,) and batch.labels.dtype == np.int64
    assert batch.masks.shape == (300, 64, 64) and batch.masks.dtype == bool
    assert len(batch.class_names) == 10 and set(batch.labels) == set(range(10))


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = vl.data.shapes(50, seed=5), vl.data.shapes(50, seed=5), vl.data.shapes(50, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)


def test_prefix_of_a_larger_request_is_the_same_images():
    small, large = vl.data.shapes(300, seed=1), vl.data.shapes(600, seed=1)
    np.testing.assert_array_equal(small.images, large.images[:300])


def test_dataset_items_equal_the_batch_generator():
    ds = ShapesDataset(600, seed=3)
    batch = vl.data.shapes(600, seed=3)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 600
    for i in (0, 255, 256, 599, -1):
        image, label, mask = ds[i]
        np.testing.assert_array_equal(image, batch.images[i])
        np.testing.assert_array_equal(mask, batch.masks[i])
        assert label == batch.labels[i]


def test_objects_cover_several_patches_and_are_brighter_than_their_background():
    batch = vl.data.shapes(500, seed=0)
    tokens = batch.token_masks(patch_size=8)
    assert tokens.shape == (500, 8, 8)
    per_image = tokens.sum(axis=(1, 2))
    assert per_image.min() >= 2 and 0.12 < tokens.mean() < 0.35
    brightness = batch.images.astype(np.float32).mean(-1)
    inside = (brightness * batch.masks).sum((1, 2)) / batch.masks.sum((1, 2))
    outside = (brightness * ~batch.masks).sum((1, 2)) / (~batch.masks).sum((1, 2))
    assert (inside > outside).mean() > 0.97


def test_habitat_backgrounds_are_a_weak_context_cue():
    batch = vl.data.shapes(6000, seed=0)
    for cls, family in HABITATS.items():
        with_class = (batch.backgrounds[batch.labels == cls] == family).mean()
        others = (batch.backgrounds[batch.labels != cls] == family).mean()
        assert 0.45 < with_class < 0.70, (cls, with_class)  # 0.45 + 0.55 / 5 expected
        assert with_class > 1.5 * others
    assert set(batch.backgrounds) == set(range(len(BACKGROUND_NAMES)))


def test_patch_fraction_averages_each_patch():
    mask = np.zeros((1, 16, 16), bool)
    mask[0, :8, :4] = True
    np.testing.assert_allclose(patch_fraction(mask, 8)[0], [[0.5, 0.0], [0.0, 0.0]])
