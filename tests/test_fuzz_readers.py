"""Property-based fuzzing of the readers (hypothesis; a fixed example budget, derandomized):
mutated proposal files, COCO results with masks and last_checkpoint files give the valid
input's result or an error naming the file; never a crash, a hang or input that would crash a
later reader (detectron2's proposal loader, pycocotools' RLE decoder)."""
import contextlib
import io
import json
import os
import pickle
import time

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.build import load_proposals_into_dataset
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from coco_helpers import small_coco
from sharpmask import add_sharpmask_config
from sharpmask.data.validation import (CheckedDatasetMapper, dataset_problems,
                                       drop_invalid_coco_annotations, proposal_file_problems,
                                       validate_catalog)
from sharpmask.engine import check_config, merge_config
from sharpmask.engine.checkpoint import last_checkpoint_problem
from sharpmask.engine.config_checks import RANGES, _range_problems
from sharpmask.evaluation.proposal_files import proposals_from_segm_file

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
RECORDS = [{"image_id": i, "height": 40, "width": 60} for i in range(1, 6)]
ODD_VALUES = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.0]
ODD_OBJECTS = ["x", None, [[1, 2]], np.zeros((3, 5)), 7, {"a": 1}, np.zeros(0)]


def _valid_proposals():
    rng = np.random.default_rng(0)
    boxes, scores = [], []
    for _ in RECORDS:
        x0, y0 = rng.uniform(0, 30, 6), rng.uniform(0, 20, 6)
        boxes.append(np.stack([x0, y0, x0 + 10, y0 + 10], 1).astype(np.float32))
        scores.append(rng.normal(size=6).astype(np.float32))
    return {"ids": [r["image_id"] for r in RECORDS], "boxes": boxes,
            "objectness_logits": scores, "bbox_mode": BoxMode.XYXY_ABS}


@st.composite
def mutated_proposals(draw):
    data = _valid_proposals()
    kind = draw(st.sampled_from(["drop_key", "duplicate_id", "shorter", "odd_value", "retype",
                                 "bbox_mode", "detectron1_names", "extra_score", "not_a_dict",
                                 "none"]))
    k = draw(st.integers(0, len(RECORDS) - 1))
    if kind == "drop_key":
        data.pop(draw(st.sampled_from(sorted(data))))
    elif kind == "duplicate_id":
        data["ids"][k] = data["ids"][(k + 1) % len(RECORDS)]
    elif kind == "shorter":
        key = draw(st.sampled_from(["ids", "boxes", "objectness_logits"]))
        data[key] = data[key][:-1]
    elif kind == "odd_value":
        value = draw(st.sampled_from(ODD_VALUES))
        if draw(st.booleans()):
            data["boxes"][k][draw(st.integers(0, 5)), draw(st.integers(0, 3))] = value
        else:
            data["objectness_logits"][k][draw(st.integers(0, 5))] = value
    elif kind == "retype":
        key = draw(st.sampled_from(["boxes", "objectness_logits", "ids"]))
        data[key][k] = draw(st.sampled_from(ODD_OBJECTS))
    elif kind == "bbox_mode":
        data["bbox_mode"] = draw(st.one_of(st.integers(-3, 10), st.just("XYXY")))
    elif kind == "detectron1_names":
        data["indexes"], data["scores"] = data.pop("ids"), data.pop("objectness_logits")
    elif kind == "extra_score":
        data["objectness_logits"][k] = np.append(data["objectness_logits"][k], 1.0)
    elif kind == "not_a_dict":
        data = list(data.values())
    return kind, data


@FUZZ
@given(mutated_proposals())
def test_proposal_file_mutations_are_named_or_load(tmp_path_factory, case):
    """Bad input: fuzzed proposal pickles: dropped, repeated, shortened or retyped fields,
    NaN/inf/huge values, a bad bbox_mode, Detectron1 names | named, or loaded by detectron2 with
    finite values"""
    _, data = case
    path = tmp_path_factory.mktemp("fuzz") / "proposals.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    problems = proposal_file_problems(str(path), "fuzz", RECORDS)
    if problems:
        assert all(str(path) in p for p in problems), problems
        return
    loaded = load_proposals_into_dataset([dict(r) for r in RECORDS], str(path))
    for r in loaded:
        boxes = np.asarray(r["proposal_boxes"], dtype=np.float64)
        assert boxes.shape[1] == 4 and np.isfinite(boxes).all()
        assert len(r["proposal_objectness_logits"]) == len(boxes)
        assert np.isfinite(r["proposal_objectness_logits"]).all()


def _valid_results():
    rng = np.random.default_rng(1)
    results = []
    for r in RECORDS:
        for _ in range(3):
            mask = np.asfortranarray((rng.random((40, 60)) < 0.3).astype(np.uint8))
            rle = mask_util.encode(mask)
            results.append({"image_id": r["image_id"], "category_id": 1, "score": 0.5,
                            "segmentation": {"size": [40, 60],
                                             "counts": rle["counts"].decode()}})
    return results


@st.composite
def mutated_results(draw):
    results = _valid_results()
    k = draw(st.integers(0, len(results) - 1))
    entry = results[k]
    kind = draw(st.sampled_from(["drop_field", "image_id", "score", "counts", "size",
                                 "polygon", "not_a_dict", "not_a_list", "none"]))
    if kind == "drop_field":
        entry.pop(draw(st.sampled_from(["image_id", "segmentation", "score"])))
    elif kind == "image_id":
        entry["image_id"] = draw(st.sampled_from([999, "1", None, 1.5, -1]))
    elif kind == "score":
        entry["score"] = draw(st.sampled_from([float("nan"), float("inf"), "high", None, True,
                                               [1.0], 1e308]))
    elif kind == "counts":
        entry["segmentation"]["counts"] = draw(st.one_of(
            st.text(max_size=40), st.just(""), st.integers(), st.lists(st.integers(0, 99))))
    elif kind == "size":
        entry["segmentation"]["size"] = draw(st.sampled_from([[60, 40], [40, 61], [0, 0]]))
    elif kind == "polygon":
        entry["segmentation"] = [[1.0, 1.0, 10.0, 1.0, 10.0, 10.0]]
    elif kind == "not_a_dict":
        results[k] = draw(st.sampled_from([7, "x", None, []]))
    elif kind == "not_a_list":
        results = {"results": results}
    return kind, results


@FUZZ
@given(mutated_results())
def test_results_file_mutations_are_named_or_decode(tmp_path_factory, case):
    """Bad input: fuzzed COCO results with masks: dropped fields, odd ids and scores, corrupt RLE
    counts, wrong sizes, polygons | named, or decoded"""
    _, results = case
    path = tmp_path_factory.mktemp("fuzz") / "segm.json"
    path.write_text(json.dumps(results))  # NaN and Infinity tokens, as a careless writer does
    try:
        proposals = proposals_from_segm_file(str(path), RECORDS)
    except ValueError as e:
        assert str(path) in str(e), e
        return
    for r in RECORDS:
        inst = proposals[r["image_id"]]
        assert np.isfinite(inst.objectness_logits.numpy()).all()
        for rle in inst.proposal_masks.rles:
            assert mask_util.decode(rle).shape == (40, 60)


@FUZZ
@given(content=st.binary(max_size=48))
def test_last_checkpoint_contents_are_named_or_name_a_checkpoint(tmp_path_factory, content):
    """Bad input: random bytes in last_checkpoint | named, or the checkpoint they name is used"""
    folder = tmp_path_factory.mktemp("ckpt")
    (folder / "model_0000004.pth").write_bytes(b"weights")
    (folder / "last_checkpoint").write_bytes(content)
    problem = last_checkpoint_problem(str(folder))
    try:
        name = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        name = None
    if name == "model_0000004.pth":
        assert problem is None
    else:
        assert problem and str(folder / "last_checkpoint") in problem
        assert "model_0000004.pth" in problem


COCO_KEYS = {"images": ["id", "file_name", "height", "width"],
             "annotations": ["id", "image_id", "category_id", "bbox", "area", "iscrowd",
                             "segmentation"],
             "categories": ["id", "name"]}


@st.composite
def mutated_coco(draw):
    """(kind, a function that mutates the small_coco dict and its image folder)."""
    kind = draw(st.sampled_from(["drop_field", "retype", "odd_number", "duplicate_id",
                                 "dangling_id", "rle_counts", "short_polygon", "missing_image",
                                 "drop_list", "not_json", "none"]))
    key = draw(st.sampled_from(sorted(COCO_KEYS)))
    k, field = draw(st.integers(0, 2)), draw(st.sampled_from(COCO_KEYS[key]))
    odd = draw(st.sampled_from(ODD_VALUES + [-5, 1e308]))
    retyped = draw(st.sampled_from(["x", None, [1, 2], {"a": 1}, 1.5, True, "1"]))
    counts = draw(st.one_of(st.text(max_size=12), st.lists(st.integers(-3, 3000), max_size=4)))

    def mutate(coco, folder):
        record = coco[key][k % len(coco[key])]
        polygon, a = [a for a in coco["annotations"] if a["image_id"] == k + 1][:2]
        if kind == "drop_field":
            record.pop(field, None)
        elif kind == "retype":
            record[field] = retyped
        elif kind == "odd_number":
            where = draw(st.sampled_from(["bbox", "area", "polygon", "height"]))
            if where == "bbox":
                a["bbox"][draw(st.integers(0, 3))] = odd
            elif where == "area":
                a["area"] = odd
            elif where == "polygon":
                polygon["segmentation"][0][draw(st.integers(0, 7))] = odd
            else:
                coco["images"][k]["height"] = odd
        elif kind == "duplicate_id":
            record["id"] = coco[key][(k + 1) % 2]["id"]  # another record's
        elif kind == "dangling_id":
            a[draw(st.sampled_from(["image_id", "category_id"]))] = 999
        elif kind == "rle_counts":
            a["segmentation"]["counts"] = counts
        elif kind == "short_polygon":
            polygon["segmentation"] = [[4.0, 4.0, 20.0, 4.0]]
        elif kind == "missing_image":
            os.remove(os.path.join(folder, coco["images"][k]["file_name"]))
        elif kind == "drop_list":
            coco.pop(key)
        return coco
    return kind, mutate


def _coco_mapper():
    cfg = get_cfg()
    cfg.INPUT.MASK_FORMAT, cfg.MODEL.MASK_ON = "bitmask", True
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (48,), 64
    return CheckedDatasetMapper(cfg, is_train=True)


@FUZZ
@given(mutated_coco())
def test_coco_json_mutations_are_named_or_load_train_and_evaluate(tmp_path_factory, case):
    """A mutated COCO file and image folder: the check at start (`dataset_problems`) names the
    file, or everything that reads the dataset works: detectron2's loader, the training mapper
    (finite boxes, masks of the image's size) and pycocotools' evaluation of the ground truth
    against itself.
    Bad input: fuzzed COCO ground truth: dropped, retyped, odd-valued, repeated or dangling
    fields, corrupt RLE, missing images, broken JSON | named at start, or loaded, mapped for
    training and evaluated by pycocotools"""
    kind, mutate = case
    folder = str(tmp_path_factory.mktemp("coco"))
    coco = mutate(small_coco(folder), folder)
    json_file = os.path.join(folder, "gt.json")
    with open(json_file, "w") as f:
        f.write("{not json" if kind == "not_json" else json.dumps(coco))
    name = os.path.basename(folder)
    register_coco_instances(name, {}, json_file, folder)
    validate_catalog()
    start = time.perf_counter()
    problems = dataset_problems(name)
    assert time.perf_counter() - start < 10
    if problems:
        assert all(folder in p for p in problems), problems
        return
    dicts = DatasetCatalog.get(name)
    assert kind != "none" or sum(len(d["annotations"]) for d in dicts) == 7
    mapper = _coco_mapper()
    for record in dicts:
        mapped = mapper(record)
        instances = mapped["instances"]
        assert torch.isfinite(instances.gt_boxes.tensor).all()
        if len(instances):
            assert instances.gt_masks.tensor.shape[1:] == mapped["image"].shape[1:]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = drop_invalid_coco_annotations(COCO(json_file), name)
        results = [dict(a, score=1.0) for a in gt.dataset.get("annotations", [])
                   if not a["iscrowd"]]
        for iou_type in ("bbox", "segm"):
            if results:
                evaluation = COCOeval(gt, gt.loadRes(results), iou_type)
                evaluation.evaluate()
                evaluation.accumulate()
                assert np.isfinite(evaluation.eval["precision"]).any()


CONFIG = "configs/shapes/deepmask_R18_shapes.yaml"
RANGED_KEYS = sorted(k for keys in RANGES.values() for k in keys)


def _yaml_override(key, value):
    """`key: value` as nested YAML lines."""
    parts = key.split(".")
    return "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[:-1])) + \
        f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}\n"


@st.composite
def mutated_config(draw):
    """(kind, the key or None, YAML text based on CONFIG, command-line opts)."""
    kind = draw(st.sampled_from(["out_of_range", "retype", "unknown_key", "missing_file",
                                 "unknown_dataset", "yaml_garbage", "odd_opts", "none"]))
    key = draw(st.sampled_from(RANGED_KEYS))
    text, opts = "", []
    if kind == "out_of_range":
        text = _yaml_override(key, draw(st.sampled_from(
            [".nan", ".inf", "-.inf", "-1", "0", "0.5", "1", "2", "1e30", "[]", "[-1, 1]"])))
    elif kind == "retype":
        text = _yaml_override(key, draw(st.sampled_from(["abc", "[a, b]", "{x: 1}", "true",
                                                         "null", "'7'"])))
    elif kind == "unknown_key":
        key = draw(st.sampled_from(["SOLVER.MAX_ITERS", "MODEL.DEEPMASK.WINDOWS",
                                    "MODEL.SHARP_MASK.KM"]))
        text = _yaml_override(key, "3")
    elif kind == "missing_file":
        key = draw(st.sampled_from(["MODEL.WEIGHTS", "MODEL.SEGMENT_PROPOSAL_GENERATOR.WEIGHTS",
                                    "MODEL.SEGMENT_PROPOSAL_GENERATOR.CONFIG_FILE"]))
        opts = [key, "/nonexistent/model_final.pth"]
    elif kind == "unknown_dataset":
        key = draw(st.sampled_from(["DATASETS.TRAIN", "DATASETS.TEST"]))
        opts = [key, "('shapes_trian',)"]
    elif kind == "yaml_garbage":
        text = draw(st.sampled_from(["MODEL: [\n", "SOLVER:\n\tBASE_LR: 1\n", ": :\n",
                                     "MODEL:\n  DEEPMASK: 3\n"]))
    elif kind == "odd_opts":
        opts = draw(st.sampled_from([["SOLVER.BASE_LR"], ["SOLVER.BASE_LR", "fast"],
                                     ["SOLVER.MAX_ITER", "1e3"]]))
        key = opts[0]
    return kind, key, text, opts


@FUZZ
@given(mutated_config())
def test_config_mutations_are_named_or_build(tmp_path_factory, repo_root, case):
    """A config with a bad value, type, key, file or dataset: merge_config + check_config name
    the key (or the file), or the config passes every range and the model builds (or its
    from_config names the key: a DeepMask window must be a multiple of the trunk stride).
    Bad input: fuzzed configs: out-of-range or NaN numbers, wrong types, misspelled keys,
    missing files, unknown datasets, broken YAML | the key or the file named at start, or a
    config that builds"""
    kind, key, text, opts = case
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(f"_BASE_: {os.path.join(repo_root, CONFIG)}\n" + text)
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    try:
        merge_config(cfg, str(path), opts)
        cfg.freeze()
        check_config(cfg, training=True)
    except Exception as e:  # what a user sees: the message must say which key or file
        named = [key] if key else []
        assert any(n and n in str(e) for n in named + [str(path)]), (kind, key, repr(e))
        assert kind != "none"
        return
    assert kind in ("out_of_range", "retype", "none"), (kind, key)
    assert _range_problems(cfg) == []
    try:
        build_model(cfg)
    except ValueError as e:  # rules of one model (a window a multiple of the trunk stride)
        assert key in str(e), (kind, key, repr(e))


@pytest.mark.parametrize("strategy, kinds", [(mutated_proposals, 10), (mutated_results, 9),
                                             (mutated_coco, 11), (mutated_config, 8)])
def test_the_fuzzed_kinds_all_occur(strategy, kinds):
    """A budget of FUZZ's size reaches every mutation kind of each strategy (derandomized: the
    same examples on every machine)."""
    seen = set()

    @FUZZ
    @given(strategy())
    def collect(case):
        seen.add(case[0])
    collect()
    assert len(seen) == kinds, seen
