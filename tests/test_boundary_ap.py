"""Boundary AP (faster-coco-eval's iouType "boundary") against an independent reference:
pycocotools' COCOeval with each pair's IoU replaced by min(mask IoU, boundary IoU), the
boundary bands computed by a plain numpy erosion as the Boundary IoU paper defines them; and
faster-coco-eval's plain mask AP against pycocotools'."""
import contextlib
import io

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from coco_helpers import BoundaryCOCOeval, inner_band
from sharpmask.evaluation import boundary_ap

DATASET = "shapes_val_mini"


@pytest.fixture(scope="module")
def detections():
    """COCO results around shapes_val_mini's objects: exact, shifted, dilated and eroded masks
    of the right category, and some of a wrong one; distinct scores."""
    DatasetCatalog.get(DATASET)  # generated on first use
    json_file = MetadataCatalog.get(DATASET).json_file
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
    rng = np.random.default_rng(0)
    results = []
    for annotation in coco.dataset["annotations"]:
        if annotation["iscrowd"]:
            continue
        mask = coco.annToMask(annotation)
        h, w = mask.shape
        dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
        shifted = np.zeros_like(mask)
        shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        kernel = np.ones((int(rng.integers(3, 8)),) * 2, np.uint8)
        variants = [mask, shifted, cv2.dilate(mask, kernel), cv2.erode(mask, kernel)]
        for k, variant in enumerate(variants):
            category = annotation["category_id"] if k < 3 or rng.random() < 0.5 else \
                int(rng.choice([c for c in coco.getCatIds() if c != annotation["category_id"]]))
            rle = mask_util.encode(np.asfortranarray(variant.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": annotation["image_id"], "category_id": category,
                            "segmentation": rle, "score": float(rng.random())})
    return json_file, results, sorted(coco.getImgIds())


def _pycocotools_stats(evaluation_class, json_file, results, image_ids, count=6):
    """The first `count` of COCOeval's summary stats (%), segm, on `image_ids`."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        evaluation = evaluation_class(gt, gt.loadRes([dict(r) for r in results]), "segm")
        evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return 100 * evaluation.stats[:count]


def test_the_band_is_the_paper_definition_on_a_drawn_square():
    """A 40 x 40 square in a 100 x 100 image: d = round(0.02 x 141.4) = 3, the band is the
    square minus its 34 x 34 core; at the image border the mask's edge is boundary too."""
    mask = np.zeros((100, 100), bool)
    mask[10:50, 20:60] = True
    band = inner_band(mask)
    assert band.sum() == 40 * 40 - 34 * 34 and not band[13:47, 23:57].any()
    corner = np.zeros((100, 100), bool)
    corner[:20, :20] = True
    assert inner_band(corner).sum() == 20 * 20 - 14 * 14  # eroded from the image edge too


def test_boundary_ap_matches_the_reference(detections):
    json_file, results, image_ids = detections
    expected = _pycocotools_stats(BoundaryCOCOeval, json_file, results, image_ids)
    got = boundary_ap(json_file, results, image_ids)
    assert [got[m] for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == \
        pytest.approx(list(expected), abs=0.01)
    mask_ap = _pycocotools_stats(COCOeval, json_file, results, image_ids)[0]
    assert got["AP"] < mask_ap  # min(mask IoU, boundary IoU): shifted and eroded masks lose


def test_faster_coco_eval_mask_ap_matches_pycocotools(detections):
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster

    json_file, results, image_ids = detections
    gt = FastCOCO(json_file)
    evaluation = COCOeval_faster(gt, gt.loadRes([dict(r) for r in results]), iouType="segm",
                                 print_function=lambda *a: None)
    evaluation.params.imgIds = image_ids
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert list(100 * np.asarray(evaluation.stats[:12])) == pytest.approx(
        list(_pycocotools_stats(COCOeval, json_file, results, image_ids, 12)), abs=0.01)
