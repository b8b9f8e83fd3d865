"""The official DeepMask trainer steps the trunk and only the head the batch used."""
from detectron2.engine import HookBase


class IdleHeadHook(HookBase):
    """After backward, drops the gradients of the branch the batch did not use
    (`DeepMask.idle_parameters`): torch's optimizers skip parameters without a gradient, so
    neither momentum nor weight decay moves that branch, and its optimizer state stays as it
    was, as with the official per-head optimizer states."""

    def after_backward(self):
        model = getattr(self.trainer.model, "module", self.trainer.model)
        for p in model.idle_parameters():
            p.grad = None
