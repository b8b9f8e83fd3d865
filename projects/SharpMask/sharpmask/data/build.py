"""Train loader of DeepMask/SharpMask: batches of centred-object patches."""
import torch
from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.utils import comm

from .patch_mapper import DeepMaskBatchStream, DeepMaskPatchMapper
from .patch_sampler import DeepMaskPatchSampler


def build_patch_sampler(cfg, dataset_dicts):
    s = cfg.INPUT.DEEPMASK
    return DeepMaskPatchSampler(
        dataset_dicts, window=cfg.MODEL.DEEPMASK.WINDOW, context=cfg.MODEL.DEEPMASK.CONTEXT,
        object_size=s.OBJECT_SIZE, scale_jitter=s.SCALE_JITTER, shift_jitter=s.SHIFT_JITTER,
        flip=s.FLIP, min_area=s.MIN_AREA, min_side=s.MIN_SIDE,
        scale_step=s.SCALE_STEP, neg_scale_range=tuple(s.NEG_SCALE_RANGE),
        neg_min_shift=s.NEG_MIN_SHIFT, neg_min_scale=s.NEG_MIN_SCALE)


def build_patch_mapper(cfg, dataset_dicts):
    dm = cfg.MODEL.DEEPMASK
    return DeepMaskPatchMapper(dataset_dicts, input_size=dm.WINDOW + 2 * dm.CONTEXT,
                               window=dm.WINDOW, target_size=dm.TARGET_SIZE,
                               image_format=cfg.INPUT.FORMAT, pixel_mean=cfg.MODEL.PIXEL_MEAN)


def _as_is(batch):
    return batch


def build_patch_train_loader(cfg):
    """An endless loader of lists of patch dicts, SOLVER.IMS_PER_BATCH patches over all workers.
    Images without objects are kept: they give negatives."""
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible "
                         f"by the number of processes ({world})")
    # One seed on every process: the batch kinds follow it (DeepMaskBatchStream).
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    sampler = build_patch_sampler(cfg, dicts)
    # The mapper reads records from one serialized buffer, as detectron2's loaders do: a list
    # of dicts would be copied page by page into every worker as its refcounts change.
    mapper = build_patch_mapper(cfg, DatasetFromList(dicts, copy=False, serialize=True))
    del dicts
    stream = DeepMaskBatchStream(sampler, mapper, cfg.SOLVER.IMS_PER_BATCH // world,
                                 cfg.INPUT.DEEPMASK.MASK_BATCH_PROB, seed)
    return torch.utils.data.DataLoader(stream, batch_size=None, collate_fn=_as_is,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS,
                                       persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)
