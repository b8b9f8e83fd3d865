#!/usr/bin/env python
"""Train and evaluate every model of the project: DeepMask, SharpMask, InstanceFCN, and
detectron2 detectors on their proposals.

    python train_net.py --config-file configs/shapes/mask_rcnn_R18_FPN_shapes.yaml
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file CONFIG --num-gpus 8          # one machine
    python train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 --machine-rank 0 \
        --dist-url tcp://HOST:PORT                                  # several machines

With MODEL.DEVICE cpu (or on a machine without GPUs), --num-gpus N starts N CPU processes that
train with gloo.
"""
import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from sharpmask import add_sharpmask_config
from sharpmask.engine import Trainer, check_config, check_weights_cover_model, merge_config
from sharpmask.engine.ddp import launch_environment


def load_config(args):
    cfg = get_cfg()
    add_sharpmask_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    cfg = load_config(args)
    check_config(cfg, training=not args.eval_only, resume=args.resume)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sharpmask")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        check_weights_cover_model(model, cfg.MODEL.WEIGHTS, cfg.MODEL.WEIGHTS_ALLOW_PARTIAL)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    logging.getLogger(__name__).info("Command Line Args: %s", args)
    with launch_environment(args.num_gpus, load_config(args).MODEL.DEVICE):
        launch(main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
