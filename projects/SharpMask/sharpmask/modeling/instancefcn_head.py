"""InstanceFCN's two fully convolutional branches and its assembling module (Dai et al., ECCV
2016, Fig. 4). Windows are m x m cells of the stride-8 score maps, centred on their cell."""
import torch
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F


class InstanceFCNHead(nn.Module):
    """features (B, C, H, W) -> (k^2 instance-sensitive score maps (B, k*k, H, W),
    objectness logits (B, H, W)): one logit per window centred at each position.

    Instance branch: 1x1 conv to `hidden` + ReLU, 3x3 conv to k^2 maps. Objectness branch: 3x3
    conv to `hidden` + ReLU, 1x1 conv to 1. Weights ~ N(0, 0.01), biases 0 (the paper's init).
    """

    def __init__(self, in_channels, k, hidden=512):
        super().__init__()
        self.k = k
        self.instance_hidden = Conv2d(in_channels, hidden, 1, activation=F.relu)
        self.instance_maps = Conv2d(hidden, k * k, 3, padding=1)
        self.objectness_hidden = Conv2d(in_channels, hidden, 3, padding=1, activation=F.relu)
        self.objectness = Conv2d(hidden, 1, 1)
        for layer in (self.instance_hidden, self.instance_maps, self.objectness_hidden,
                      self.objectness):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features):
        maps = self.instance_maps(self.instance_hidden(features))
        objectness = self.objectness(self.objectness_hidden(features))[:, 0]
        return maps, objectness


def subwindow_channels(m, k, device=None):
    """(m, m) long: the score map each cell of an m x m window copies from. Cell i of a side
    lies in the sub-window that holds its centre, floor((i + 1/2) k / m): when k does not
    divide m the sub-windows differ by at most one cell and the split is symmetric about the
    window's centre for odd m and k (m = 21, k = 5: 4, 4, 5, 4, 4 cells)."""
    part = (2 * torch.arange(m, device=device) + 1) * k // (2 * m)
    return part[:, None] * k + part[None, :]


def assemble(score_maps, rows, cols, k, m, fill=-1e4):
    """The assembling module: copy each window's k x k sub-windows from their own score map.

    Args:
        score_maps: (k*k, H, W) instance-sensitive logits of one image.
        rows, cols: (N,) long, the window centre cells (top-left cell: centre - m // 2).
        fill: value of the window cells outside the map.
    Returns:
        (N, m, m) assembled logits, and (N, m, m) bool: which cells lie inside the map.
    """
    _, height, width = score_maps.shape
    offsets = torch.arange(m, device=score_maps.device) - m // 2
    r = rows[:, None] + offsets  # (N, m)
    c = cols[:, None] + offsets
    valid = ((r >= 0) & (r < height))[:, :, None] & ((c >= 0) & (c < width))[:, None, :]
    channel = subwindow_channels(m, k, score_maps.device)
    flat = score_maps.reshape(-1)
    index = (channel * height * width)[None] + (r.clamp(0, height - 1) * width)[:, :, None] \
        + c.clamp(0, width - 1)[:, None, :]
    values = flat[index]
    return torch.where(valid, values, values.new_tensor(fill)), valid
