"""DeepMask's centred-object patch sampling (the official training recipe, DataSampler.lua).

A sample is a square patch of ``input_size = window + 2 * context`` pixels cut from a rescaled
image; its central ``window`` pixels are the region a proposal covers. The sampler draws
geometry only (`PatchSpec`); `render_patch` cuts the pixels and the mask target, padding grey
(the mean pixel) outside the image and area-averaging when it shrinks (as the official does).

- Mask samples (always positive): category uniform, then annotation uniform among the usable
  ones (not crowd, area >= min_area, box sides >= min_side); the object's largest side is scaled
  to ``object_size`` times 2^U(-scale_jitter, scale_jitter), its centre shifted by
  U(-shift_jitter, shift_jitter) patch pixels, and the patch flipped with probability `flip`.
- Score samples, half positive. Positives follow images and objects, not categories: a random
  image with a usable object, a random scale bin present in it, a random object of that bin,
  exactly centred; the bins are `scale_step` wide in log2, so the object's largest side lands
  in (object_size, object_size * 2^scale_step]. Negatives: a random image (images without
  objects included), a random centre and an image scale from the bins 2^neg_scale_range in
  steps of `scale_step`, rejected while any object centre lies within ``neg_min_shift`` patch
  pixels (both axes) at a size within 2^``neg_min_scale`` of the canonical size.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np
import pycocotools.mask as mask_util


@dataclass
class PatchSpec:
    """Where a patch comes from. `scale` is patch pixels per image pixel; `center` is the image
    point (continuous XY coordinates) at the patch centre."""
    image_index: int
    center: tuple
    scale: float
    flip: bool
    label: int  # 1 positive, 0 negative
    kind: str  # "mask" or "score"
    annotation_index: int = -1  # the centred object, for mask samples and score positives


class DeepMaskPatchSampler:
    """Draws `PatchSpec`s from detectron2 dataset dicts (boxes in XYWH_ABS, as COCO loads them).

    The dicts are read once, into numpy arrays (object centres, sides, categories, scale bins,
    image sizes): no Python object per record or object is kept, so DataLoader workers, which
    share the sampler by fork, do not copy its pages as they read it (COCO has ~600k objects).
    """

    def __init__(self, dataset_dicts, *, window, context, object_size, scale_jitter,
                 shift_jitter, flip, min_area, min_side, scale_step, neg_scale_range,
                 neg_min_shift, neg_min_scale):
        self.window, self.context, self.object_size = window, context, object_size
        self.scale_jitter, self.shift_jitter, self.flip = scale_jitter, shift_jitter, flip
        self.scale_step = scale_step
        low, high = neg_scale_range
        self.neg_log_scales = low + scale_step * np.arange(int(round((high - low) / scale_step)) + 1)
        self.neg_min_shift, self.neg_min_scale = neg_min_shift, neg_min_scale
        # usable: rows (image index, annotation index, category, scale bin, cx, cy, side);
        # objects: (cx, cy, side) of every non-crowd object, image i's in offsets[i]:offsets[i+1]
        usable, objects, offsets = [], [], [0]
        self.image_sizes = np.zeros((len(dataset_dicts), 2), np.float64)  # width, height
        for i, record in enumerate(dataset_dicts):
            self.image_sizes[i] = record["width"], record["height"]
            for j, ann in enumerate(record.get("annotations", [])):
                x, y, w, h = ann["bbox"]
                if ann.get("iscrowd", 0):
                    continue
                objects.append((x + w / 2, y + h / 2, max(w, h)))
                if min(w, h) >= min_side and mask_util.area(annotation_rle(
                        ann["segmentation"], record["height"], record["width"])) >= min_area:
                    usable.append((i, j, ann["category_id"], self.scale_bin(max(w, h)),
                                   x + w / 2, y + h / 2, max(w, h)))
            offsets.append(len(objects))
        if not usable:
            raise ValueError(
                "no usable annotation for DeepMask sampling (need non-crowd objects with area "
                f">= {min_area} px and box sides >= {min_side} px); is the dataset empty?"
            )
        self.objects = np.array(objects, np.float64).reshape(-1, 3)
        self.object_offsets = np.array(offsets, np.int64)
        usable = np.array(usable, np.float64)
        self.usable_index = usable[:, :4].astype(np.int64)  # image, annotation, category, bin
        self.usable_geometry = usable[:, 4:]  # cx, cy, side
        categories = self.usable_index[:, 2]
        self.categories = sorted(set(categories.tolist()))
        self.by_category = {c: np.flatnonzero(categories == c) for c in self.categories}
        images = self.usable_index[:, 0]  # ascending: rows were added image by image
        self.positive_images, first = np.unique(images, return_index=True)
        self.positive_rows = np.append(first, len(images))  # image k's rows: [k] .. [k + 1]

    def scale_bin(self, side):
        """The bin b of an object side: side in (object_size * 2^(b * step),
        object_size * 2^((b + 1) * step)]; a patch scale of 2^(-b * step) brings it into
        (object_size, object_size * 2^step]."""
        return int(math.ceil(math.log2(side / self.object_size) / self.scale_step - 1e-9)) - 1

    @property
    def input_size(self):
        return self.window + 2 * self.context

    def _usable(self, row):
        """(image index, annotation index, centre, side) of usable object `row`."""
        image_index, annotation_index = (int(v) for v in self.usable_index[row, :2])
        cx, cy, side = self.usable_geometry[row]
        return image_index, annotation_index, (float(cx), float(cy)), float(side)

    def sample_mask(self, rng):
        category = self.categories[rng.integers(len(self.categories))]
        candidates = self.by_category[category]
        image_index, annotation_index, (cx, cy), side = self._usable(
            candidates[rng.integers(len(candidates))])
        scale = self.object_size / side * 2 ** rng.uniform(-self.scale_jitter, self.scale_jitter)
        dx, dy = rng.uniform(-self.shift_jitter, self.shift_jitter, 2) / scale
        return PatchSpec(image_index, (cx + dx, cy + dy), scale, bool(rng.random() < self.flip),
                         1, "mask", annotation_index)

    def sample_score(self, rng):
        flip = bool(rng.random() < self.flip)
        if rng.random() < 0.5:
            k = rng.integers(len(self.positive_images))
            rows = np.arange(self.positive_rows[k], self.positive_rows[k + 1])
            bins = self.usable_index[rows, 3]
            _, first = np.unique(bins, return_index=True)
            present = bins[np.sort(first)]  # the image's bins in order of first appearance
            scale_bin = present[rng.integers(len(present))]
            in_bin = rows[bins == scale_bin]
            image_index, annotation_index, center, _ = self._usable(
                in_bin[rng.integers(len(in_bin))])
            scale = 2.0 ** (-int(scale_bin) * self.scale_step)
            return PatchSpec(image_index, center, scale, flip, 1, "score", annotation_index)
        for _ in range(1000):
            image_index = int(rng.integers(len(self.image_sizes)))
            center = rng.uniform(0, 1, 2) * self.image_sizes[image_index]
            scale = 2.0 ** self.neg_log_scales[rng.integers(len(self.neg_log_scales))]
            if not self.near_object(image_index, center, scale):
                return PatchSpec(image_index, tuple(center), scale, flip, 0, "score")
        raise RuntimeError("could not draw a negative patch in 1000 tries; lower "
                           "INPUT.DEEPMASK.NEG_MIN_SHIFT or NEG_MIN_SCALE")

    def near_object(self, image_index, center, scale):
        """Whether an object centre is within the negative exclusion zone of this patch."""
        objects = self.objects[self.object_offsets[image_index]:
                               self.object_offsets[image_index + 1]]
        if len(objects) == 0:
            return False
        offset = np.abs(objects[:, :2] - np.asarray(center)).max(axis=1) * scale
        scale_gap = np.abs(np.log2(objects[:, 2] * scale / self.object_size))
        return bool(np.any((offset < self.neg_min_shift) & (scale_gap < self.neg_min_scale)))


def annotation_rle(segmentation, height, width):
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as one compressed RLE."""
    if isinstance(segmentation, dict):
        if isinstance(segmentation["counts"], (str, bytes)):
            return segmentation
        return mask_util.frPyObjects(segmentation, *segmentation["size"])
    return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))


def patch_affine(spec, input_size, out_size=None, offset=0.0):
    """2x3 matrix from image pixel indices to output pixel indices (OpenCV convention).

    The output covers patch coordinates [offset, input_size - offset] resampled to `out_size`
    pixels (the whole patch by default; the central window for mask targets).
    """
    span = input_size - 2 * offset
    out_size = out_size or input_size
    k = spec.scale * out_size / span  # output pixels per image pixel
    sign = -1.0 if spec.flip else 1.0
    # continuous coordinates: out = k * sign * (p - c) + out_size / 2; then pixel-centre shift
    a = np.array([[k * sign, 0.0], [0.0, k]])
    b = np.array([out_size / 2, out_size / 2]) - a @ np.asarray(spec.center, dtype=np.float64)
    b = b + a @ np.array([0.5, 0.5]) - 0.5
    return np.hstack([a, b[:, None]])


def area_prefilter(image, affine):
    """Where `affine` (2x3, image to output pixel indices, axis-aligned) shrinks the image,
    area-average the image to about the output's resolution first, as the official sampler's
    image.scale does (plain interpolation would alias). Returns (image, affine from its pixel
    indices)."""
    fx, fy = abs(affine[0, 0]), abs(affine[1, 1])
    if fx >= 1 and fy >= 1:
        return image, affine
    h, w = image.shape[:2]
    size = (max(1, round(w * min(fx, 1.0))), max(1, round(h * min(fy, 1.0))))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    f = np.array([size[0] / w, size[1] / h])  # small index = (index + 0.5) * f - 0.5
    linear = affine[:, :2] / f  # per small pixel
    offset = affine[:, 2] - linear @ (0.5 * f - 0.5)
    return small, np.hstack([linear, offset[:, None]])


def render_patch(spec, image, annotation, input_size, window, target_size, pad_value):
    """Cut the patch (H, W, C) uint8 from `image`, and for mask samples the (target_size,
    target_size) uint8 mask of `annotation` over the central window (area-averaged, then
    thresholded at 0.5)."""
    source, affine = area_prefilter(image, patch_affine(spec, input_size))
    patch = cv2.warpAffine(source, affine, (input_size, input_size),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(float(v) for v in pad_value))
    if patch.ndim == 2:
        patch = patch[:, :, None]
    if spec.kind != "mask":
        return patch, None
    rle = annotation_rle(annotation["segmentation"], *image.shape[:2])
    full = mask_util.decode(rle).astype(np.float32)
    source, affine = area_prefilter(
        full, patch_affine(spec, input_size, target_size, (input_size - window) / 2))
    target = cv2.warpAffine(source, affine, (target_size, target_size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return patch, (target >= 0.5).astype(np.uint8)
