"""Patch-level evaluation of DeepMask/SharpMask, as the official evalPerPatch / Trainer:test:
mask IoU on a fixed set of held-out mask patches, and score accuracy on held-out score patches.

It is the quickest signal of whether masks are learning, and the official code keeps the model
with the best recall at IoU .7 on it (BestCheckpointer on "patch/recall@0.7"). The mean IoU per
category of the centred object shows which shapes hold the mean down.
"""
import numpy as np
import torch
from detectron2.data import MetadataCatalog, get_detection_dataset_dicts
from detectron2.utils import comm

from ..data.build import build_patch_mapper, build_patch_sampler


class PatchEvaluator:
    """A fixed, seeded set of `num_patches` mask patches and as many score patches (half
    positive) drawn from `dataset_names` with the training sampler; `evaluate(model)` returns
    {"mean_iou", "median_iou", "recall@0.5", "recall@0.7", "score_accuracy",
    "mean_iou/<category>" for each category among the mask patches} (percent).
    Each process evaluates every world_size-th patch; the results are gathered."""

    def __init__(self, cfg, dataset_names, num_patches, seed, batch_size=32):
        dicts = get_detection_dataset_dicts(dataset_names, filter_empty=False)
        sampler = build_patch_sampler(cfg, dicts)
        rng = np.random.default_rng(seed)
        self.mask_specs = [sampler.sample_mask(rng) for _ in range(num_patches)]
        self.score_specs = [sampler.sample_score(rng) for _ in range(num_patches)]
        names = MetadataCatalog.get(dataset_names[0]).get("thing_classes")
        ids = [dicts[s.image_index]["annotations"][s.annotation_index]["category_id"]
               for s in self.mask_specs]
        label = names.__getitem__ if names else str
        self.mask_categories = [label(i) for i in ids]
        self.category_order = [label(i) for i in sorted(set(ids))]  # the dataset's order
        self.mapper = build_patch_mapper(cfg, dicts)
        self.batch_size = batch_size

    @staticmethod
    def _mine(items):
        """This process's share: every world_size-th item."""
        return items[comm.get_rank()::comm.get_world_size()]

    def _batches(self, specs):
        mine = self._mine(specs)
        for start in range(0, len(mine), self.batch_size):
            yield [self.mapper(spec) for spec in mine[start:start + self.batch_size]]

    @torch.no_grad()
    def evaluate(self, model):
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        ious, correct = [], []
        for batch in self._batches(self.mask_specs):
            mask_logits, _ = model.patch_logits(batch)
            predicted = mask_logits > 0
            targets = torch.stack([x["gt_mask"] for x in batch]).to(predicted.device) > 0
            inter = (predicted & targets).flatten(1).sum(1)
            union = (predicted | targets).flatten(1).sum(1)
            ious.extend((inter / union.clamp(min=1)).tolist())
        for batch in self._batches(self.score_specs):
            _, score_logits = model.patch_logits(batch)
            labels = torch.tensor([x["label"] for x in batch], device=score_logits.device)
            correct.extend(((score_logits > 0).long() == labels).tolist())
        model.train(was_training)
        ious = np.array(sum(comm.all_gather(ious), []))
        correct = np.array(sum(comm.all_gather(correct), []))
        categories = np.array(sum(comm.all_gather(self._mine(self.mask_categories)), []))
        by_category = {f"mean_iou/{c}": 100 * float(ious[categories == c].mean())
                       for c in self.category_order}
        return {
            "mean_iou": 100 * float(ious.mean()), "median_iou": 100 * float(np.median(ious)),
            "recall@0.5": 100 * float((ious > 0.5).mean()),
            "recall@0.7": 100 * float((ious > 0.7).mean()),
            "score_accuracy": 100 * float(correct.mean()), **by_category,
        }
