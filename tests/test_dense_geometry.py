"""Dense inference geometry with hand-made score maps and masks (no training): the proposal of
a window known to cover an object must land on that object's pixels in the original image."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from sharpmask.modeling.dense_inference import (PyramidLevel, dense_proposals, pyramid_geometry,
                                                resize_and_pad)

STRIDE, WINDOW, PAD, S = 16, 80, 40, 28


def _level_with_object(image, scale, score_at_object):
    """One pyramid level of `image` at `scale`: (PyramidLevel whose score map is -10 but for
    `score_at_object` at the window best centred on the object, the (r, c) of that window,
    decode(rows, cols) -> the object's cells in those windows)."""
    height, width = image.shape[-2:]
    size, (sx, sy), padded = pyramid_geometry(height, width, scale, PAD, STRIDE, WINDOW)
    padded_image = resize_and_pad(image, size, padded, PAD)[0, 0]
    ys, xs = torch.nonzero(padded_image > 0.5, as_tuple=True)
    x0p, x1p, y0p, y1p = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
    rows = padded[0] // STRIDE - WINDOW // STRIDE + 1
    cols = padded[1] // STRIDE - WINDOW // STRIDE + 1
    r = int(np.clip(round(((y0p + y1p) / 2 - WINDOW / 2) / STRIDE), 0, rows - 1))
    c = int(np.clip(round(((x0p + x1p) / 2 - WINDOW / 2) / STRIDE), 0, cols - 1))
    scores = torch.full((rows, cols), -10.0)
    scores[r, c] = score_at_object

    def decode(rr, cc):
        centres = (torch.arange(S) + 0.5) * WINDOW / S
        out = []
        for row, col in zip(rr.tolist(), cc.tolist()):
            inside_x = (centres >= x0p - col * STRIDE) & (centres < x1p - col * STRIDE)
            inside_y = (centres >= y0p - row * STRIDE) & (centres < y1p - row * STRIDE)
            out.append((inside_y[:, None] & inside_x[None, :]).float())
        return torch.stack(out)
    return PyramidLevel(sx, sy, padded, scores), (r, c), decode


@pytest.mark.parametrize("height,width,scale,obj", [
    (240, 320, 1.0, (100, 60, 46, 46)),     # canonical size at scale 1
    (241, 333, 0.5, (150, 90, 92, 80)),     # odd sizes, downscaled
    (97, 61, 1.0, (10, 30, 40, 44)),        # image smaller than a patch
    (121, 77, 0.7071068, (5, 40, 60, 55)),  # object at the border, odd scale
    (480, 640, 0.25, (300, 200, 184, 170)),  # large object, coarse scale
    (300, 200, 2.0, (80, 120, 23, 20)),     # small object, upscaled
])
def test_window_proposal_lands_on_the_object(height, width, scale, obj):
    x, y, w, h = obj
    image = torch.zeros(1, height, width)
    image[0, y:y + h, x:x + w] = 1.0
    level, cell, decode_level = _level_with_object(image, scale, 10.0)
    assert level.padded_size[0] % STRIDE == 0 and level.padded_size[1] % STRIDE == 0

    def decode(level_index, rr, cc):
        assert level_index == 0 and list(zip(rr.tolist(), cc.tolist())) == [cell]
        return decode_level(rr, cc)

    proposals = dense_proposals([level], decode, (height, width), stride=STRIDE, window=WINDOW,
                                pad=PAD, top_k=1, mask_threshold=0.5)
    assert len(proposals) == 1 and proposals.objectness_logits[0] == 10.0
    pasted = mask_util.decode(proposals.proposal_masks.to_rles()[0]).astype(bool)
    truth = image[0].numpy().astype(bool)
    iou = (pasted & truth).sum() / (pasted | truth).sum()
    assert iou > 0.8, iou
    box = proposals.proposal_boxes.tensor[0].numpy()
    tolerance = WINDOW / S / min(level.scale_x, level.scale_y) + 2  # one mask cell, in pixels
    assert np.abs(box - np.array([x, y, x + w, y + h])).max() <= tolerance


def test_ranked_windows_are_routed_to_their_pyramid_level():
    """Three levels (scales 2, 1, 0.5), as every real run has. Object A peaks on the second
    level, object B on the third, the first level has no peak (and more windows than the
    others, so a window index counted on the wrong level lands elsewhere): each of the top 2
    proposals must be decoded on its own level at its own cell and land on its object."""
    height, width = 200, 260
    objects = {"A": (30, 40, 50, 44), "B": (150, 90, 92, 96)}  # x, y, w, h: A small, B large
    masks = {}
    for name, (x, y, w, h) in objects.items():
        masks[name] = torch.zeros(1, height, width)
        masks[name][0, y:y + h, x:x + w] = 1.0
    first, _, _ = _level_with_object(masks["A"], 2.0, -10.0)
    second, cell_a, decode_a = _level_with_object(masks["A"], 1.0, 9.0)
    third, cell_b, decode_b = _level_with_object(masks["B"], 0.5, 8.0)
    assert first.scores.numel() > second.scores.numel() > third.scores.numel()
    calls = []

    def decode(level_index, rows, cols):
        calls.append((level_index, list(zip(rows.tolist(), cols.tolist()))))
        return {1: decode_a, 2: decode_b}[level_index](rows, cols)

    proposals = dense_proposals([first, second, third], decode, (height, width), stride=STRIDE,
                                window=WINDOW, pad=PAD, top_k=2, mask_threshold=0.5)
    assert sorted(calls) == [(1, [cell_a]), (2, [cell_b])]
    assert proposals.objectness_logits.tolist() == [9.0, 8.0]
    pasted = mask_util.decode(proposals.proposal_masks.to_rles()).astype(bool)
    for k, name in enumerate("AB"):
        truth = masks[name][0].numpy().astype(bool)
        iou = (pasted[:, :, k] & truth).sum() / (pasted[:, :, k] | truth).sum()
        assert iou > 0.8, (name, iou)
        x, y, w, h = objects[name]
        scale = (1.0, 0.5)[k]
        tolerance = WINDOW / S / scale + 2  # one mask cell in image pixels
        box = proposals.proposal_boxes.tensor[k].numpy()
        assert np.abs(box - np.array([x, y, x + w, y + h])).max() <= tolerance


def test_no_windows_gives_empty_proposals():
    proposals = dense_proposals([], None, (50, 60), stride=STRIDE, window=WINDOW, pad=PAD,
                                top_k=10, mask_threshold=0.5)
    assert len(proposals) == 0 and proposals.proposal_masks.to_rles() == []


def test_greedy_nms_prefix_equals_nms_over_all_boxes():
    """Stopping once enough boxes survive must not change which boxes survive."""
    from torchvision.ops import nms

    from sharpmask.modeling.dense_inference import greedy_nms_prefix
    torch.manual_seed(0)
    centres = torch.rand(6000, 2) * 200
    sizes = torch.rand(6000, 2) * 40 + 5
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    scores = torch.rand(6000).sort(descending=True).values
    full = nms(boxes, scores, 0.5)
    assert 1000 < len(full) < 6000
    for count in (10, 300, 1000, len(full), 5000):
        torch.testing.assert_close(greedy_nms_prefix(boxes, scores, 0.5, count), full[:count])
    torch.testing.assert_close(greedy_nms_prefix(boxes, scores, 0.5), full)
