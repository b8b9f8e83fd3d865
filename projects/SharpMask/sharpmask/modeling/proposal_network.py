"""What DeepMask, SharpMask and InstanceFCN share at inference: pixel normalisation, the input
check, the max-size rule and detectron2's test-time calling convention."""
import torch
from detectron2.structures import Boxes, Instances
from torch import nn

from ..structures import WindowedMasks


def inference_dtype(cfg):
    """TEST.AMP as a torch dtype for dense inference's autocast, or None (float32)."""
    if not cfg.TEST.AMP.ENABLED:
        return None
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    if cfg.TEST.AMP.DTYPE not in dtypes:
        raise ValueError(f"TEST.AMP.DTYPE must be one of {sorted(dtypes)}, got "
                         f"{cfg.TEST.AMP.DTYPE!r}")
    if cfg.TEST.AMP.DTYPE == "float16" and cfg.MODEL.DEVICE == "cpu":
        raise ValueError("TEST.AMP.DTYPE float16 is for GPUs; on a CPU use bfloat16 (or "
                         "TEST.AMP.ENABLED False)")
    return dtypes[cfg.TEST.AMP.DTYPE]


class SegmentProposalNetwork(nn.Module):
    """Base of the proposal meta-architectures. Subclasses implement
    `propose_windows(image, top_k)`, called by `propose`."""

    def __init__(self, *, pixel_mean, pixel_std, test_max_size=None, inference_dtype=None):
        super().__init__()
        self.test_max_size = test_max_size
        self.inference_dtype = inference_dtype
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    def normalize(self, image):
        return (image.to(self.device).float() - self.pixel_mean) / self.pixel_std

    def check_image(self, image):
        if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
            raise ValueError(f"expected a ({self.pixel_mean.shape[0]}, H, W) image, got "
                             f"{tuple(image.shape)}; convert grayscale/RGBA images to the "
                             "model's INPUT.FORMAT first (detectron2's read_image does)")

    @torch.no_grad()
    def propose(self, image, top_k=None):
        """(C, H, W) image (pixel values, uint8 or float) -> Instances of proposals in its
        coordinates (proposal_boxes, objectness_logits, proposal_masks): at most `top_k`
        (default: the model's TEST_TOPK), best first. With an `inference_dtype` (TEST.AMP) the
        networks run under autocast; `dense_proposals` ranks and thresholds in float32."""
        self.check_image(image)
        if self.inference_dtype is None:
            return self.propose_windows(image, top_k)
        with torch.autocast(self.device.type, dtype=self.inference_dtype):
            return self.propose_windows(image, top_k)

    def max_size_factor(self, image):
        """Factor applied to every pyramid scale so that the longer side stays within
        `test_max_size` (bounds memory and time on huge images)."""
        longest = max(image.shape[-2:])
        if self.test_max_size and longest > self.test_max_size:
            return self.test_max_size / longest
        return 1.0

    def inference(self, batched_inputs):
        results = []
        for x in batched_inputs:
            proposals = self.propose(x["image"])
            height, width = x.get("height", proposals.image_size[0]), \
                x.get("width", proposals.image_size[1])
            results.append({"proposals": rescale_proposals(proposals, (height, width))})
        return results


def rescale_proposals(proposals, output_size):
    """Map proposals of a (possibly resized) input image to the original image size."""
    in_h, in_w = proposals.image_size
    out_h, out_w = output_size
    if (in_h, in_w) == (out_h, out_w):
        return proposals
    factor = torch.tensor([out_w / in_w, out_h / in_h] * 2,
                          device=proposals.objectness_logits.device)
    masks = proposals.proposal_masks
    result = Instances((out_h, out_w))
    result.proposal_boxes = Boxes(proposals.proposal_boxes.tensor * factor)
    result.objectness_logits = proposals.objectness_logits
    result.proposal_masks = WindowedMasks(masks.masks, masks.windows * factor, (out_h, out_w),
                                          masks.threshold)
    return result
