"""Mixed-precision training on a CPU: bfloat16 autocast, detectron2's AMPTrainer otherwise.

detectron2's AMPTrainer (SOLVER.AMP.ENABLED) requires CUDA: it autocasts with
`torch.cuda.amp` and scales float16 gradients. On a CPU, autocast runs in bfloat16, which has
float32's exponent range, so no loss scaling is needed (a disabled GradScaler passes the loss
and the optimizer step through). Losses are computed by the models in float32 where autocast
says so (BCE with logits is on its float32 list).
"""
import time

import torch
from detectron2.engine import AMPTrainer


class CPUAMPTrainer(AMPTrainer):
    """AMPTrainer for a model on the CPU: bfloat16 autocast, no gradient scaling."""

    def __init__(self, model, data_loader, optimizer):
        super().__init__(model, data_loader, optimizer,
                         grad_scaler=torch.amp.GradScaler("cpu", enabled=False),
                         precision=torch.bfloat16)

    def run_step(self):
        assert self.model.training, "[CPUAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
