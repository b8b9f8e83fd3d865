"""Dense inference geometry with hand-made score maps and masks (no training): the proposal of
a window known to cover an object must land on that object's pixels in the original image."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from sharpmask.modeling.dense_inference import (PyramidLevel, dense_proposals, pyramid_geometry,
                                                resize_and_pad)

STRIDE, WINDOW, PAD, S = 16, 80, 40, 28


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
    size, (sx, sy), padded = pyramid_geometry(height, width, scale, PAD, STRIDE, WINDOW)
    assert padded[0] % STRIDE == 0 and padded[1] % STRIDE == 0
    padded_image = resize_and_pad(image, size, padded, PAD)[0, 0]
    ys, xs = torch.nonzero(padded_image > 0.5, as_tuple=True)
    x0p, x1p = xs.min().item(), xs.max().item() + 1  # the object as seen by the network
    y0p, y1p = ys.min().item(), ys.max().item() + 1
    rows, cols = padded[0] // STRIDE - WINDOW // STRIDE + 1, padded[1] // STRIDE - WINDOW // STRIDE + 1
    r = int(np.clip(round(((y0p + y1p) / 2 - WINDOW / 2) / STRIDE), 0, rows - 1))
    c = int(np.clip(round(((x0p + x1p) / 2 - WINDOW / 2) / STRIDE), 0, cols - 1))
    scores = torch.full((rows, cols), -10.0)
    scores[r, c] = 10.0
    level = PyramidLevel(sx, sy, padded, scores)

    def decode(level_index, rr, cc):
        assert level_index == 0 and rr.tolist() == [r] and cc.tolist() == [c]
        centres = (torch.arange(S) + 0.5) * WINDOW / S  # mask cell centres, window coordinates
        inside_x = (centres >= x0p - c * STRIDE) & (centres < x1p - c * STRIDE)
        inside_y = (centres >= y0p - r * STRIDE) & (centres < y1p - r * STRIDE)
        return (inside_y[:, None] & inside_x[None, :]).float()[None]

    proposals = dense_proposals([level], decode, (height, width), stride=STRIDE, window=WINDOW,
                                pad=PAD, top_k=1, mask_threshold=0.5)
    assert len(proposals) == 1 and proposals.objectness_logits[0] == 10.0
    pasted = mask_util.decode(proposals.proposal_masks.to_rles()[0]).astype(bool)
    truth = image[0].numpy().astype(bool)
    iou = (pasted & truth).sum() / (pasted | truth).sum()
    assert iou > 0.8, iou
    box = proposals.proposal_boxes.tensor[0].numpy()
    tolerance = WINDOW / S / min(sx, sy) + 2  # one mask cell in image pixels
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
