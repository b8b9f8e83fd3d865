"""Turns sampled patch geometry into model inputs, and streams whole batches of one kind."""
import itertools

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.utils import comm
from torch.utils.data import IterableDataset, get_worker_info

from .patch_sampler import render_patch
from .validation import read_image_checked


class DeepMaskPatchMapper:
    """PatchSpec -> {"image": (C, P, P) uint8 tensor, "label": int, "kind": str,
    "gt_mask": (G, G) uint8 tensor for mask samples}. Grey (the mean pixel) pads outside."""

    def __init__(self, dataset_dicts, *, input_size, window, target_size, image_format,
                 pixel_mean):
        self.dataset_dicts = dataset_dicts
        self.input_size, self.window, self.target_size = input_size, window, target_size
        self.image_format = image_format
        self.pad_value = np.asarray(pixel_mean, dtype=np.float64)  # in the input's channel order

    def __call__(self, spec):
        record = self.dataset_dicts[spec.image_index]
        image = read_image_checked(record["file_name"], self.image_format)
        utils.check_image_size(record, image)
        annotation = (record["annotations"][spec.annotation_index]
                      if spec.annotation_index >= 0 else None)
        patch, target = render_patch(spec, image, annotation, self.input_size, self.window,
                                     self.target_size, self.pad_value)
        out = {"image": torch.as_tensor(np.ascontiguousarray(patch.transpose(2, 0, 1))),
               "label": spec.label, "kind": spec.kind, "spec": spec}
        if target is not None:
            out["gt_mask"] = torch.as_tensor(target)
        return out


class DeepMaskBatchStream(IterableDataset):
    """Endless batches; each batch is all mask samples (probability `mask_batch_prob`, the
    official HFREQ) or all score samples.

    The kind of the loader's b-th batch is drawn from (seed, b) alone, so with the same seed
    every process trains the same head at each iteration (DDP then averages gradients of one
    kind, as the official single-GPU batch of 32 is one kind); the samples are drawn from
    (seed, rank, worker), so processes and workers see different patches. With W workers the
    DataLoader yields worker w's k-th batch as batch k * W + w.
    """

    def __init__(self, sampler, mapper, batch_size, mask_batch_prob, seed):
        self.sampler, self.mapper = sampler, mapper
        self.batch_size, self.mask_batch_prob, self.seed = batch_size, mask_batch_prob, seed

    def batch_kind(self, index):
        """"mask" or "score": the kind of the loader's `index`-th batch, on every process."""
        draw = np.random.default_rng([self.seed, index]).random()
        return "mask" if draw < self.mask_batch_prob else "score"

    def __iter__(self):
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rng = np.random.default_rng([self.seed, comm.get_rank(), worker_id])
        for k in itertools.count():
            draw = (self.sampler.sample_mask if self.batch_kind(k * workers + worker_id) == "mask"
                    else self.sampler.sample_score)
            yield [self.mapper(draw(rng)) for _ in range(self.batch_size)]
