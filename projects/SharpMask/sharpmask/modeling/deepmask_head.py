"""DeepMask's "head C" (the official improved DeepMask): a shared 512-d embedding per window,
read by a mask branch and a score branch."""
import torch
from torch import nn


class DeepMaskHead(nn.Module):
    """Heads over res4 windows of `window_cells` x `window_cells` cells.

    The shared layer is the official 1x1 conv to 128 + ReLU followed by a linear layer on the
    flattened window; written as a conv of kernel `window_cells`, it applies to one cropped
    window in training and densely to a whole feature map at inference.
    """

    def __init__(self, in_channels, window_cells, head_channels=128, embed_dim=512,
                 mask_size=56, score_hidden=1024, dropout=0.5):
        super().__init__()
        self.window_cells = window_cells
        self.mask_size = mask_size
        self.reduce = nn.Conv2d(in_channels, head_channels, 1)
        self.embed = nn.Conv2d(head_channels, embed_dim, window_cells)  # low rank, no ReLU
        self.mask = nn.Linear(embed_dim, mask_size * mask_size)
        self.score = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, score_hidden),
                                   nn.ReLU(inplace=True), nn.Dropout(dropout),
                                   nn.Linear(score_hidden, 1))

    def embedding(self, res4):
        """(B, C, h, w) res4 -> (B, E, h - n + 1, w - n + 1): one vector per window position."""
        return self.embed(torch.relu(self.reduce(res4)))

    def mask_logits(self, vectors):
        """(N, E) -> (N, mask_size, mask_size)."""
        return self.mask(vectors).view(-1, self.mask_size, self.mask_size)

    def score_logits(self, vectors):
        """(N, E) -> (N,)."""
        return self.score(vectors).squeeze(-1)
