"""Property-based fuzzing of the readers (hypothesis; a fixed example budget, derandomized):
mutated proposal files, COCO results with masks and last_checkpoint files give the valid
input's result or an error naming the file; never a crash, a hang or input that would crash a
later reader (detectron2's proposal loader, pycocotools' RLE decoder)."""
import json
import pickle

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.build import load_proposals_into_dataset
from detectron2.structures import BoxMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharpmask.data.validation import proposal_file_problems
from sharpmask.engine.checkpoint import last_checkpoint_problem
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


def test_the_fuzzed_kinds_all_occur():
    """The example budget reaches every mutation kind (derandomized: the same examples on
    every machine)."""
    seen = set()

    @FUZZ
    @given(mutated_proposals(), mutated_results())
    def collect(proposals_case, results_case):
        seen.add(("pkl", proposals_case[0]))
        seen.add(("json", results_case[0]))
    collect()
    assert len([s for s in seen if s[0] == "pkl"]) == 10
    assert len([s for s in seen if s[0] == "json"]) == 9
