"""The embedded `shapes` dataset: generated COCO-format instance segmentation, no download.

Each image has a cluttered, textured background (smooth colour fields, noise, scribbles that are
not objects) and 0 to 12 objects of 8 categories, from ~16 px to most of the image: convex
(ellipse, rectangle, triangle), non-convex (star, cross, crescent), with a hole (ring) and thin
(bar). Objects are drawn in order, so later ones occlude earlier ones and masks are the visible
parts. About one image in ten holds a crowd region (a cluster of small objects annotated as one
`iscrowd` RLE) and about one in twenty has no object at all.

Everything is a function of (seed, split, image index), so the set is reproducible. A split is
written under `<root>/shapes/<split>/` (JPEG images plus `annotations.json` with compressed RLE
masks) by generating into a temporary folder and renaming it when complete, under a file lock,
so an interrupted or concurrent generation never leaves a half set that looks complete.
"""
import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile

import cv2
import numpy as np
import pycocotools.mask as mask_util

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
CATEGORIES = ["ellipse", "rectangle", "triangle", "star", "cross", "ring", "crescent", "bar"]
# split -> (number of images, seed)
SPLITS = {"train": (2000, 1000), "val": (200, 2000), "val_mini": (20, 3000)}
IMAGE_SIDE_RANGE = (256, 640)
MIN_OBJECT_SIZE = 16
MAX_OBJECTS = 12
P_EMPTY_IMAGE = 0.05
P_CROWD = 0.1
MIN_VISIBLE_AREA = 20  # px; more occluded instances are dropped
MIN_VISIBLE_FRACTION = 0.15


def _rotate(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _polygon_mask(shape, center, points):
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round((points + center) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask


def _ellipse_mask(shape, center, axes, angle_deg):
    mask = np.zeros(shape, np.uint8)
    c = tuple(int(round(v * 16)) for v in center)
    a = tuple(max(1, int(round(v * 16))) for v in axes)
    cv2.ellipse(mask, c, a, angle_deg, 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask


def draw_shape(category, shape, center, size, rng):
    """Binary (H, W) uint8 mask of one object of `category` whose extent is about `size` px."""
    r = size / 2.0
    angle = rng.uniform(0, 2 * np.pi)
    if category == "ellipse":
        return _ellipse_mask(shape, center, (r, r * rng.uniform(0.4, 1.0)), np.degrees(angle))
    if category == "rectangle":
        h = r * rng.uniform(0.35, 1.0)
        pts = np.array([[-r, -h], [r, -h], [r, h], [-r, h]])
        return _polygon_mask(shape, center, _rotate(pts, angle))
    if category == "triangle":
        thetas = angle + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.4, 0.4, 3)
        return _polygon_mask(shape, center, r * np.stack([np.cos(thetas), np.sin(thetas)], 1))
    if category == "star":
        n = int(rng.integers(4, 8))
        radii = np.tile([r, r * rng.uniform(0.35, 0.5)], n)
        thetas = angle + np.arange(2 * n) * np.pi / n
        return _polygon_mask(shape, center, np.stack([radii * np.cos(thetas),
                                                      radii * np.sin(thetas)], 1))
    if category == "cross":
        w = r * rng.uniform(0.25, 0.4)
        pts = np.array([[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w], [w, r], [-w, r],
                        [-w, w], [-r, w], [-r, -w], [-w, -w]])
        return _polygon_mask(shape, center, _rotate(pts, angle))
    if category == "ring":
        ratio = rng.uniform(0.45, 0.7)
        squash = rng.uniform(0.6, 1.0)
        outer = _ellipse_mask(shape, center, (r, r * squash), np.degrees(angle))
        inner = _ellipse_mask(shape, center, (r * ratio, r * squash * ratio), np.degrees(angle))
        return outer & (1 - inner)
    if category == "crescent":
        offset = r * rng.uniform(0.35, 0.6)
        outer = _ellipse_mask(shape, center, (r, r), 0)
        bite_center = (center[0] + offset * np.cos(angle), center[1] + offset * np.sin(angle))
        bite = _ellipse_mask(shape, bite_center, (r * 0.9, r * 0.9), 0)
        return outer & (1 - bite)
    if category == "bar":
        h = max(1.5, r * rng.uniform(0.06, 0.16))
        pts = np.array([[-r, -h], [r, -h], [r, h], [-r, h]])
        return _polygon_mask(shape, center, _rotate(pts, angle))
    raise ValueError(f"unknown shapes category {category!r}")


def _texture(height, width, rng):
    """(h, w, 3) float texture: a colour with stripes, checks or noise."""
    base = rng.uniform(0, 255, 3)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:
        pattern = np.zeros((height, width), np.float32)
    elif kind == 1:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        pattern = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    elif kind == 2:
        period = rng.uniform(4, 14)
        pattern = np.sign(np.sin(xx * np.pi / period) * np.sin(yy * np.pi / period))
    else:
        pattern = rng.normal(0, 0.6, (height, width)).astype(np.float32)
    amplitude = rng.uniform(10, 45)
    second = rng.uniform(-1, 1, 3) * amplitude
    return np.clip(base + pattern[..., None] * second, 0, 255)


def _background(height, width, rng):
    coarse = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3))
    image = cv2.resize(coarse.astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, rng.uniform(3, 18), image.shape)
    for _ in range(int(rng.integers(3, 25))):  # clutter: random scribbles, not objects
        pts = np.cumsum(rng.normal(0, 25, (int(rng.integers(2, 6)), 2)), 0)
        pts += rng.uniform([0, 0], [width, height])
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.polylines(image, [pts.astype(np.int32)], False, colour, int(rng.integers(1, 4)),
                      cv2.LINE_AA)
    return image


def _paint(image, mask, rng):
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = mask[y0:y1, x0:x1].astype(bool)
    image[y0:y1, x0:x1][crop] = _texture(y1 - y0, x1 - x0, rng)[crop]


def generate_image(seed, split, index):
    """Return (BGR uint8 image, list of (category index, visible mask, iscrowd))."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION, index])
    height, width = (int(v) for v in rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1, 2))
    image = _background(height, width, rng)
    layers = []  # (category index, full mask, iscrowd), bottom to top
    if rng.random() < P_CROWD:
        category = int(rng.integers(len(CATEGORIES)))
        cluster = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
        spread = rng.uniform(15, 50)
        crowd = np.zeros((height, width), np.uint8)
        for _ in range(int(rng.integers(15, 40))):
            center = cluster + rng.normal(0, spread, 2)
            part = draw_shape(CATEGORIES[category], (height, width), center,
                              rng.uniform(8, 20), rng)
            if part.any():
                _paint(image, part, rng)
                crowd |= part
        if crowd.any():
            layers.append((category, crowd, 1))
    num_objects = 0 if rng.random() < P_EMPTY_IMAGE else int(rng.integers(1, MAX_OBJECTS + 1))
    max_size = 0.9 * min(height, width)
    for _ in range(num_objects):
        category = int(rng.integers(len(CATEGORIES)))
        size = float(np.exp(rng.uniform(np.log(MIN_OBJECT_SIZE), np.log(max_size))))
        center = rng.uniform([0, 0], [width, height])
        mask = draw_shape(CATEGORIES[category], (height, width), center, size, rng)
        if mask.any():
            _paint(image, mask, rng)
            layers.append((category, mask, 0))
    instances, occluder = [], np.zeros((height, width), np.uint8)
    for category, mask, iscrowd in reversed(layers):
        visible = mask & (1 - occluder)
        occluder |= mask
        area = int(visible.sum())
        if area >= MIN_VISIBLE_AREA and area >= MIN_VISIBLE_FRACTION * mask.sum():
            instances.append((category, visible, iscrowd))
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0.6)
    return image, instances[::-1]


def _coco_dict(split, num_images, seed, image_dir):
    images, annotations = [], []
    for index in range(num_images):
        image, instances = generate_image(seed, split, index)
        file_name = f"{index:06d}.jpg"
        if not cv2.imwrite(os.path.join(image_dir, file_name), image,
                           [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"could not write {os.path.join(image_dir, file_name)}")
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name,
                       "height": image.shape[0], "width": image.shape[1]})
        for category, mask, iscrowd in instances:
            rle = mask_util.encode(np.asfortranarray(mask))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category + 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": iscrowd,
            })
    return {
        "info": {"description": f"shapes {split}: generated, seed {seed}, "
                                f"generator version {GENERATOR_VERSION}"},
        "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                       for i, n in enumerate(CATEGORIES)],
    }


def shapes_split_paths(root, split):
    """(annotations json, image folder) of a split under `root`."""
    folder = os.path.join(root, "shapes", split)
    return os.path.join(folder, "annotations.json"), os.path.join(folder, "images")


def _manifest(split):
    num_images, seed = SPLITS[split]
    return {"split": split, "num_images": num_images, "seed": seed, "version": GENERATOR_VERSION}


def _is_complete(root, split):
    folder = os.path.join(root, "shapes", split)
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    json_file, image_dir = shapes_split_paths(root, split)
    return (manifest == _manifest(split) and os.path.isfile(json_file)
            and len(os.listdir(image_dir)) == manifest["num_images"])


def ensure_shapes_split(root, split):
    """Generate `split` under `root` unless a complete copy is there; return its paths."""
    if split not in SPLITS:
        raise KeyError(f"unknown shapes split {split!r}; choose one of {sorted(SPLITS)}")
    base = os.path.join(root, "shapes")
    if _is_complete(root, split):
        return shapes_split_paths(root, split)
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one generator at a time (e.g. DDP workers)
        if not _is_complete(root, split):
            for stale in glob.glob(os.path.join(base, f".{split}-*")):
                shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run
            num_images, seed = SPLITS[split]
            logger.info("Generating shapes/%s (%d images) under %s ...", split, num_images, base)
            tmp = tempfile.mkdtemp(prefix=f".{split}-", dir=base)
            os.makedirs(os.path.join(tmp, "images"))
            coco = _coco_dict(split, num_images, seed, os.path.join(tmp, "images"))
            with open(os.path.join(tmp, "annotations.json"), "w") as f:
                json.dump(coco, f)
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                json.dump(_manifest(split), f)
            final = os.path.join(base, split)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(final)  # incomplete or from another generator version
            os.rename(tmp, final)
    return shapes_split_paths(root, split)
