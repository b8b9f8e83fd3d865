"""WindowedMasks pasting and RLE encoding against a direct slow implementation."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Instances

from sharpmask.structures import WindowedMasks, encode_masks_as_rles


def _slow_paste(mask, window, height, width):
    """Soft value of every image pixel: bilinear sampling of the S x S mask stretched over the
    window (pixel centres, zero outside the mask), the semantics of Mask R-CNN's pasting."""
    size = mask.shape[0]
    x0, y0, x1, y1 = window
    out = np.zeros((height, width))
    for py in range(height):
        for px in range(width):
            u = (px + 0.5 - x0) / (x1 - x0) * size - 0.5
            v = (py + 0.5 - y0) / (y1 - y0) * size - 0.5
            iu, iv = int(np.floor(u)), int(np.floor(v))
            value = 0.0
            for dy, wy in ((0, 1 - (v - iv)), (1, v - iv)):
                for dx, wx in ((0, 1 - (u - iu)), (1, u - iu)):
                    if 0 <= iv + dy < size and 0 <= iu + dx < size:
                        value += wy * wx * mask[iv + dy, iu + dx]
            out[py, px] = value
    return out


@pytest.mark.parametrize("scale", [1.0, 2.0, 3.5])
def test_paste_matches_direct_bilinear_placement(scale):
    rng = np.random.default_rng(int(scale * 10))
    height, width, size = 37, 53, 8
    masks = rng.random((6, size, size)).astype(np.float32)
    corners = [(0, 0), (5.5, 7), (-6, -3), (width - 10, height - 12), (40, 2.25), (-2, 30)]
    windows = [[x, y, x + size * scale, y + size * scale] for x, y in corners]
    wm = WindowedMasks(torch.from_numpy(masks), torch.tensor(windows), (height, width), 0.5)
    pasted = torch.cat(list(wm.iter_pasted(chunk_size=4))).numpy()
    for i, window in enumerate(windows):
        soft = _slow_paste(masks[i], window, height, width)
        decided = np.abs(soft - 0.5) > 1e-4  # away from the threshold, where float order matters
        assert pasted[i].any()
        assert np.array_equal(pasted[i][decided], (soft >= 0.5)[decided]), i
    rles = encode_masks_as_rles(wm, chunk_size=4)
    assert np.array_equal(mask_util.decode(rles).transpose(2, 0, 1), pasted)


def test_indexing_cat_and_instances():
    wm = WindowedMasks(torch.rand(5, 4, 4), torch.rand(5, 4) * 10, (20, 30), 0.2)
    inst = Instances((20, 30), proposal_masks=wm, objectness_logits=torch.arange(5.0))
    sub = inst[torch.tensor([4, 0])]
    assert torch.equal(sub.proposal_masks.masks, wm.masks[[4, 0]])
    both = Instances.cat([inst, sub])
    assert len(both.proposal_masks) == 7 and both.proposal_masks.threshold == 0.2
    with pytest.raises(ValueError, match="different images"):
        WindowedMasks.cat([wm, WindowedMasks(torch.rand(1, 4, 4), torch.rand(1, 4), (9, 9))])
    with pytest.raises(ValueError, match="square"):
        WindowedMasks(torch.rand(2, 4, 5), torch.rand(2, 4), (9, 9))


def test_batched_paste_on_mixed_windows_and_tight_boxes():
    """Mixed window sizes (several scales) and windows across the borders, against the direct
    implementation, and against detectron2's paste where its 1-px margin suffices (fine
    masks; detectron2 clips the half cell that bilinear sampling reaches past the window)."""
    from detectron2.layers.mask_ops import paste_masks_in_image
    from detectron2.structures import BitMasks

    rng = np.random.default_rng(0)
    height, width, n = 120, 170, 60
    masks = torch.from_numpy(rng.random((n, 14, 14)).astype(np.float32)) ** 3
    masks[5] = 0  # an empty proposal
    sides = rng.choice([20.0, 45.25, 160.0, 300.0], n)
    x0 = rng.uniform(-0.9 * sides, width - 5)  # detectron2's paste needs windows that
    y0 = rng.uniform(-0.9 * sides, height - 5)  # intersect the image
    windows = torch.tensor(np.stack([x0, y0, x0 + sides, y0 + sides], 1), dtype=torch.float32)
    wm = WindowedMasks(masks, windows, (height, width), 0.3)
    ours = torch.cat(list(wm.iter_pasted(chunk_size=7)))
    for i in range(n):
        soft = _slow_paste(masks[i].numpy(), windows[i].tolist(), height, width)
        decided = np.abs(soft - 0.3) > 1e-4
        assert np.array_equal(ours[i].numpy()[decided], (soft >= 0.3)[decided]), i
    fine = sides <= 20  # mask cells of ~1.4 px: within detectron2's margin
    reference = paste_masks_in_image(masks[fine], windows[fine], (height, width), 0.3)
    assert (ours[fine] != reference.bool()).sum() <= 2  # float rounding at the threshold only
    expected_boxes = BitMasks(ours).get_bounding_boxes().tensor
    assert torch.equal(wm.tight_boxes(), expected_boxes)
    assert (expected_boxes.sum(1) == 0).any() and (expected_boxes.sum(1) > 0).any()
