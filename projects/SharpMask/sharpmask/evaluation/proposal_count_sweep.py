"""A Fast R-CNN on precomputed proposals, evaluated at several numbers of proposals per image in
one pass over the test set (the DeepMask paper's Fig. 5: AP against the number of proposals).

Fast R-CNN scores every proposal on its own (RoIAlign, box head, predictor), so the outputs for
the top k proposals are the first k rows of the outputs for the top K >= k: the backbone and
box head run once per image for the largest count, and only detectron2's per-class NMS and
top-100 (`FastRCNNOutputLayers.inference`) run once per count. Equal to evaluating each count
on its own with DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST (tests/test_proposal_count_sweep.py).
"""
import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_context
from detectron2.modeling import GeneralizedRCNN, StandardROIHeads
from tqdm import tqdm


def _check_fast_rcnn(model, cfg):
    if not (isinstance(model, GeneralizedRCNN) and isinstance(model.roi_heads, StandardROIHeads)
            and model.proposal_generator is None and cfg.MODEL.LOAD_PROPOSALS):
        raise ValueError("evaluate_at_proposal_counts needs a Fast R-CNN on precomputed "
                         "proposals (GeneralizedRCNN with StandardROIHeads, MODEL.LOAD_PROPOSALS "
                         "True, MODEL.PROPOSAL_GENERATOR.NAME PrecomputedProposals); got "
                         f"{type(model).__name__} with {type(model.roi_heads).__name__}")
    if cfg.MODEL.MASK_ON:
        raise ValueError("evaluate_at_proposal_counts scores boxes only: set MODEL.MASK_ON False")


def detections_at_proposal_counts(model, inputs, counts):
    """inputs: a test batch whose "proposals" hold each image's top max(counts) proposals, best
    first -> {count: [{"instances": Instances}] in the input images' sizes}, as
    `model(inputs)` gives with each image's first `count` proposals."""
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    proposals = [x["proposals"].to(model.device) for x in inputs]
    heads = model.roi_heads
    box_features = heads.box_pooler([features[f] for f in heads.box_in_features],
                                    [p.proposal_boxes for p in proposals])
    logits, deltas = heads.box_predictor(heads.box_head(box_features))
    per_image = list(zip(logits.split([len(p) for p in proposals]),
                         deltas.split([len(p) for p in proposals])))
    outputs = {}
    for count in counts:
        first = [p[:count] for p in proposals]
        predictions = (torch.cat([s[:count] for s, _ in per_image]),
                       torch.cat([d[:count] for _, d in per_image]))
        instances, _ = heads.box_predictor.inference(predictions, first)
        outputs[count] = GeneralizedRCNN._postprocess(instances, inputs, images.image_sizes)
    return outputs


def evaluate_at_proposal_counts(cfg, model, dataset, evaluators, description=None):
    """Box evaluation of the Fast R-CNN `model` with the top k proposals of `dataset`'s file
    (cfg.DATASETS.PROPOSAL_FILES_TEST), for every k in `evaluators` ({k: DatasetEvaluator})
    -> {k: the evaluator's results}. With a `description`, a progress bar over the images."""
    _check_fast_rcnn(model, cfg)
    counts = sorted(evaluators)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = counts[-1]
    loader = build_detection_test_loader(cfg, dataset)
    for evaluator in evaluators.values():
        evaluator.reset()
    with inference_context(model), torch.no_grad():
        for inputs in tqdm(loader, desc=description, unit="img", disable=description is None,
                           dynamic_ncols=True):
            outputs = detections_at_proposal_counts(model, inputs, counts)
            for count in counts:
                evaluators[count].process(inputs, outputs[count])
    return {count: evaluators[count].evaluate() for count in counts}
