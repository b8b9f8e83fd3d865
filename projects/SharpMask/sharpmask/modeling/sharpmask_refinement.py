"""SharpMask's top-down refinement: coarse-to-fine stages that merge the mask encoding with
skip features of the trunk, ending at the full window resolution."""
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


class RefinementStage(nn.Module):
    """One stage: vertical path on the mask encoding M (km -> km -> km/2), horizontal path on the
    skip feature F (C -> hidden -> ks -> km/2); sum, ReLU, nearest x2 upsampling.

    forward(M: (N, km, s, s), H: (N, km/2, s, s) the horizontal path's output for the same
    window) -> (N, km/2, 2s, 2s).
    """

    def __init__(self, mask_channels, skip_channels, skip_hidden, skip_mid, out_channels):
        super().__init__()
        self.vertical = nn.Sequential(_conv3x3(mask_channels, mask_channels),
                                      nn.ReLU(inplace=True),
                                      _conv3x3(mask_channels, out_channels))
        self.horizontal = nn.Sequential(_conv3x3(skip_channels, skip_hidden),
                                        nn.ReLU(inplace=True), _conv3x3(skip_hidden, skip_mid),
                                        nn.ReLU(inplace=True), _conv3x3(skip_mid, out_channels))

    def forward(self, mask_encoding, horizontal):
        merged = F.relu(self.vertical(mask_encoding) + horizontal)
        return F.interpolate(merged, scale_factor=2, mode="nearest")


class SharpMaskRefinement(nn.Module):
    """From the 512-d DeepMask embedding and skip features to full-resolution mask logits.

    The horizontal paths depend on the trunk's features only, so they are applied to whole
    feature maps (of a training patch, or of an image at inference, once per scale) and their
    outputs cropped to each window; the three 3x3 convolutions reach 3 cells, inside the
    patch's context margin, so training and dense inference compute the same values.

    Args:
        skip_channels: channels of the skip features, coarse to fine (res4, res3, res2, conv1).
        window_cells: side of the window on res4 (10 for a 160 px window).
        km, ks: channels of the first mask encoding and of the first horizontal path; both
            halve at each stage (official: 32, 32).
        skip_hidden: first horizontal conv width per stage (official: 64, 64, 64, 32).
    """

    def __init__(self, embed_dim, skip_channels, window_cells, km=32, ks=32,
                 skip_hidden=(64, 64, 64, 32)):
        super().__init__()
        if km % (2 ** len(skip_channels)) or ks % (2 ** (len(skip_channels) - 1)):
            raise ValueError(f"km={km} must halve {len(skip_channels)} times and ks={ks} "
                             f"{len(skip_channels) - 1} times to integers")
        self.window_cells = window_cells
        self.km = km
        self.encode = nn.Linear(embed_dim, km * window_cells * window_cells)  # M1
        stages = []
        for i, channels in enumerate(skip_channels):
            m_in = km // 2 ** i
            stages.append(RefinementStage(m_in, channels, skip_hidden[i], ks // 2 ** i,
                                          m_in // 2))
        self.stages = nn.ModuleList(stages)
        self.predict = _conv3x3(km // 2 ** len(skip_channels), 1)

    def horizontal(self, skips):
        """Coarse-to-fine skip feature maps (B, C_k, H_k, W_k) -> (B, km/2^(k+1), H_k, W_k)."""
        return [stage.horizontal(skip) for stage, skip in zip(self.stages, skips)]

    def forward(self, vectors, horizontal_crops):
        """vectors: (N, E); horizontal_crops: coarse-to-fine list of the horizontal paths'
        outputs cropped to the windows, (N, km/2^(k+1), s*2^k, s*2^k).
        Returns (N, s*2^K, s*2^K) mask logits (160 x 160 for the official sizes)."""
        n = self.window_cells
        x = self.encode(vectors).view(-1, self.km, n, n)
        for stage, horizontal in zip(self.stages, horizontal_crops):
            x = stage(x, horizontal)
        return self.predict(x).squeeze(1)
