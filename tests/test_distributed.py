"""Image folders on disk, lens recipes, and every dataset analysis on a real local Ray equal to the local path."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_model
from PIL import Image

import vitlens_widgets as vl
from vitlens_widgets.analysis import (
    Batch,
    Job,
    Ray,
    attention_perturbation_test,
    block_change_rate,
    combine,
    context_removal,
    identifiability_by_block,
    identifiability_vs_random,
    key_value_agreement,
    object_context_test,
    perturbation_effects,
    probe_ranked_removal,
    random_init_lens,
    residual_match_formulas,
    run,
    sublayer_contributions,
    sublayer_gain_by_location,
)
from vitlens_widgets.analysis.identifiability import by_block_frame, identifiability_job, object_context_frame
from vitlens_widgets.analysis.memories import agreement_job
from vitlens_widgets.analysis.paper import (
    attention_perturbation_job,
    change_rate_job,
    location_gain_job,
    residual_match_job,
    vs_random_job,
)
from vitlens_widgets.analysis.perturbations import perturbation_job
from vitlens_widgets.analysis.probe_ranking import fit_token_probes, probe_removal_job
from vitlens_widgets.analysis.removal import context_removal_job
from vitlens_widgets.analysis.sublayers import sublayer_job
from vitlens_widgets.data.folders import class_indices, load_labelled
from vitlens_widgets.engine.recipe import LensRecipe
from vitlens_widgets.explain.evaluate import evaluate_relevance, relevance_job


def write_folder(root, images, labels, masks=None, names=vl.data.CLASS_NAMES):
    """Images as ``root/images/<class>/<i>.png``, masks as ``root/masks/<class>/<i>.png`` (0 / 255)."""
    for i, (image, label) in enumerate(zip(images, labels)):
        for kind, pixels in (("images", image), ("masks", None if masks is None else masks[i] * np.uint8(255))):
            if pixels is not None:
                (root / kind / names[label]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / kind / names[label] / f"{i:02d}.png")
    return root / "images", root / "masks"


@pytest.fixture(scope="module")
def demo() -> vl.Lens:
    return vl.Lens.demo()


@pytest.fixture(scope="module")
def shapes():
    return vl.data.shapes(6, seed=5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shapes, demo):
    images, masks = write_folder(tmp_path_factory.mktemp("shapes"), shapes.images, shapes.labels, shapes.masks)
    return vl.data.image_folder(images, masks=masks, classes=demo.class_names)


def folder_order(folder) -> list[int]:
    return [int(path.rsplit("/", 1)[1].split(".")[0]) for path, _, _ in folder.files]


def test_image_folder_reads_back_the_images_labels_and_masks_written(folder, shapes, demo):
    items = list(folder.labelled_items(demo.preprocessor))
    assert len(folder) == len(items) == 6 and folder.has_masks
    for i, (image, label, mask) in zip(folder_order(folder), items):
        np.testing.assert_array_equal(np.asarray(image), shapes.images[i])
        assert label == shapes.labels[i]
        np.testing.assert_array_equal(mask, shapes.masks[i])


def test_masks_are_resized_and_cropped_like_their_image(tmp_path):
    lens = vl.Lens(make_model("vit"))  # resizes to 71 and crops 64: not the identity
    mask = np.zeros((90, 120), bool)
    mask[10:70, 5:60] = True
    image = np.repeat((mask * np.uint8(255))[..., None], 3, axis=-1)  # the image shows its own mask
    images, masks = write_folder(tmp_path, [image], [0], [mask])
    _, _, cropped = load_labelled(lens.preprocessor, str(images / "circle/00.png"), str(masks / "circle/00.png"), 0)
    seen = lens.prepare(image).crop[..., 0] > 127  # the image pixels the model sees, bicubic
    assert cropped.shape == lens.preprocessor.input_size and 0.2 < cropped.mean() < 0.8
    assert (cropped == seen).mean() > 0.97  # equal but for interpolation at the edge


def test_folder_errors_name_the_problem(tmp_path, shapes):
    (tmp_path / "empty" / "circle").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images in"):
        vl.data.image_folder(tmp_path / "empty")
    images, masks = write_folder(tmp_path / "typo", shapes.images[:1], [0], shapes.masks[:1], names=["circel"])
    with pytest.raises(ValueError, match=r"unknown class folder.*'circel'.*did you mean 'circle'"):
        vl.data.image_folder(images, classes=vl.data.CLASS_NAMES)
    (masks / "circel" / "00.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 1 images have no mask"):
        vl.data.image_folder(images, masks=masks, classes={"circel": 0})
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "circel" / "00.png")
    folder = vl.data.image_folder(images, masks=masks, classes={"circel": 0})
    with pytest.raises(ValueError, match="must have its image's size"):
        next(folder.labelled_items(vl.Lens.demo().preprocessor))


def test_class_folders_by_synset_number_or_name():
    assert class_indices(["n01443537", "n01440764", "7"], None) == {"n01443537": 1, "n01440764": 0, "7": 7}
    assert class_indices(["star"], vl.data.CLASS_NAMES) == {"star": list(vl.data.CLASS_NAMES).index("star")}


def test_recipes_rebuild_the_same_lens_and_never_redraw_random_weights(tmp_path, demo):
    from safetensors.torch import save_file

    model = make_model("vit")
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    lens = vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path=tmp_path / "w.safetensors", img_size=64, depth=2)
    rebuilt = pickle.loads(pickle.dumps(LensRecipe.of(lens))).build()
    for a, b in zip(lens.model.state_dict().values(), rebuilt.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert LensRecipe.of(demo).source == "demo"
    random = vl.Lens.from_timm("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    assert LensRecipe.of(random).source == "model" and LensRecipe.of(random).model is random.model


def test_a_random_init_copy_travels_as_its_trained_recipe_and_a_seed(demo):
    random = random_init_lens(demo, seed=3)
    recipe = LensRecipe.of(random)
    assert recipe == LensRecipe("demo", random_init_seed=3) and recipe.model is None
    rebuilt = pickle.loads(pickle.dumps(recipe)).build()
    for a, b in zip(random.model.state_dict().values(), rebuilt.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    of_a_model = random_init_lens(vl.Lens(make_model("vit")), seed=3)  # no recipe to rebuild from: the weights travel
    assert LensRecipe.of(of_a_model).model is of_a_model.model


def _ones(lens, state, batch: Batch):
    return {"ones": np.ones(len(batch) + 1)}


def test_a_map_must_return_one_row_per_image(demo, shapes):
    with pytest.raises(ValueError, match="not one row per image"):
        run(Job(map=_ones, reduce=lambda lens, columns: columns), demo, shapes, progress=False)
    train = vl.data.shapes(4, seed=9)
    for analysis in (
        identifiability_by_block,
        identifiability_vs_random,
        sublayer_gain_by_location,
        block_change_rate,
        attention_perturbation_test,
        residual_match_formulas,
        context_removal,
        lambda lens, data, **kw: probe_ranked_removal(lens, train, data, **kw),
    ):
        with pytest.raises(ValueError, match="executor must be one of"):
            analysis(demo, shapes, progress=False, executor="dask")


# --- a real local Ray ------------------------------------------------------------------------
def assert_same(local, distributed):
    for a, b in zip(*[x if isinstance(x, tuple) else (x,) for x in (local, distributed)]):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-7)


def test_ray_here_is_local_with_two_cpus(local_ray):
    assert len(local_ray.nodes()) == 1 and local_ray.cluster_resources()["CPU"] == 2
    assert local_ray.nodes()[0]["NodeManagerAddress"] in {"127.0.0.1", local_ray.util.get_node_ip_address()}


@pytest.mark.slow
def test_every_analysis_on_ray_equals_its_local_function(local_ray, demo, folder):
    every = combine(
        identifiability=identifiability_job(batch_size=4),
        sublayers=sublayer_job(batch_size=4),
        perturbations=perturbation_job(),
        agreement=agreement_job("attn", batch_size=4),
        relevance=relevance_job(["class_space", "random"], [0.0, 0.5]),
    )
    got = run(every, demo, folder, executor=Ray(actors=1), progress=False)  # one actor pool for all of them
    per_image = got["identifiability"]
    assert_same(identifiability_by_block(demo, folder, progress=False), by_block_frame(per_image, "resid"))
    assert_same(object_context_test(demo, folder, 300, progress=False), object_context_frame(per_image, 300))
    assert_same(sublayer_contributions(demo, folder, progress=False), got["sublayers"])
    assert_same(perturbation_effects(demo, folder, progress=False), got["perturbations"])
    assert_same(key_value_agreement(demo, folder, "attn", progress=False), got["agreement"])
    relevance = evaluate_relevance(demo, folder, ["class_space", "random"], [0.0, 0.5], progress=False)
    assert_same(relevance, got["relevance"][:2])


@pytest.mark.slow
def test_the_papers_analyses_on_ray_equal_their_local_functions(local_ray, demo, folder):
    train = vl.data.shapes(12, seed=9)
    options = dict(n_permutations=300, batch_size=4)
    every = combine(
        vs_random=vs_random_job(LensRecipe.of(random_init_lens(demo)), **options),  # rebuilt on the actor
        gain=location_gain_job("mlp", **options),
        change=change_rate_job(batch_size=4),
        attention=attention_perturbation_job(**options),
        match=residual_match_job(batch_size=4),
        removal=context_removal_job(**options),
        ranked=probe_removal_job(fit_token_probes(demo, train), (0.0, 0.5), class_space=True, **options),
        agreement=agreement_job("mlp", definition="code", by_outcome=True, **options),
    )
    got = run(every, demo, folder, executor=Ray(actors=1), progress=False)
    local = dict(progress=False, **options)
    assert_same(identifiability_vs_random(demo, folder, **local), got["vs_random"])
    assert_same(sublayer_gain_by_location(demo, folder, "mlp", **local), got["gain"])
    assert_same(block_change_rate(demo, folder, batch_size=4, progress=False), got["change"])
    assert_same(attention_perturbation_test(demo, folder, **local), got["attention"])
    assert_same(residual_match_formulas(demo, folder, batch_size=4, progress=False), got["match"])
    assert_same(context_removal(demo, folder, **local), got["removal"])
    ranked = probe_ranked_removal(demo, train, folder, (0.0, 0.5), class_space=True, **local)
    assert_same(ranked, got["ranked"])
    agreement = key_value_agreement(demo, folder, "mlp", definition="code", by_outcome=True, **local)
    assert_same(agreement, got["agreement"])


def test_an_image_folder_gives_what_the_same_images_in_memory_give(demo, folder, shapes):
    assert_same(identifiability_by_block(demo, shapes, progress=False), identifiability_by_block(demo, folder))


@pytest.mark.slow
def test_two_actors_return_batches_out_of_order_and_the_driver_restores_it(local_ray, demo, shapes):
    local = object_context_test(demo, shapes, 300, batch_size=2, progress=False)  # p-values depend on image order
    assert_same(local, object_context_test(demo, shapes, 300, batch_size=2, progress=False, executor=Ray(actors=2)))


@pytest.mark.slow
def test_a_ray_dataset_and_a_lens_of_a_model_instance(local_ray, shapes):
    lens = vl.Lens(make_model("vit"), class_names=list(vl.data.CLASS_NAMES) + [f"c{i}" for i in range(990)])
    rows = [{"image": im, "label": int(y), "mask": m} for im, y, m in zip(shapes.images, shapes.labels, shapes.masks)]
    dataset = local_ray.data.from_items(rows)
    expected = sublayer_contributions(lens, shapes, progress=False)
    assert_same(expected, sublayer_contributions(lens, dataset, progress=False))  # read locally
    assert_same(expected, sublayer_contributions(lens, dataset, progress=False, executor="ray"))  # model shipped


def test_survey_writes_one_tidy_table_per_measurement_and_the_figure(tmp_path, demo, folder):
    from vitlens_widgets.survey import main

    masks = folder.files[0][2].rsplit("/", 2)[0]
    main(
        [
            "--models",
            "demo",
            "--data",
            str(folder.root),
            "--masks",
            masks,
            "--permutations",
            "200",
            "--out",
            str(tmp_path),
        ]
    )
    table = pd.read_csv(tmp_path / "identifiability.csv")
    expected = identifiability_by_block(demo, folder, progress=False)
    assert (table.model == "demo").all() and (table.depth == demo.depth).all()
    assert_same(expected, table.drop(columns=["model", "depth"]))
    tests = pd.read_csv(tmp_path / "object_context.csv")
    assert_same(object_context_test(demo, folder, 200, progress=False), tests.drop(columns=["model", "depth"]))
    svg = (tmp_path / "survey.svg").read_text()
    assert svg.count("<polyline") == 4 and ">demo<" in svg  # cls, image, object, context; one model


def test_default_actor_pool_follows_gpus_else_cpus_and_leaves_a_cpu_for_reads():
    from vitlens_widgets.analysis.runner import default_actors

    assert default_actors({"CPU": 8.0}, gpus=0, cpus=1, reads_upstream=False) == 8
    assert default_actors({"CPU": 8.0}, gpus=0, cpus=2, reads_upstream=True) == 3
    assert default_actors({"CPU": 32.0, "GPU": 4.0}, gpus=1, cpus=1, reads_upstream=False) == 4
    assert default_actors({"CPU": 32.0, "GPU": 2.0}, gpus=0.5, cpus=1, reads_upstream=True) == 4
    assert default_actors({"CPU": 1.0}, gpus=0, cpus=1, reads_upstream=True) == 1
