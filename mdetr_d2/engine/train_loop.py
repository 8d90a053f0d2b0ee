"""The inner training step: optional autocast, finite-loss check, global-norm clipping."""
import logging
import time
from typing import Mapping, Optional

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MDETRSimpleTrainer(SimpleTrainer):
    """``SimpleTrainer`` with MDETR's step, portable across Detectron2 v0.6 / main and CPU / CUDA.

    Detectron2's ``AMPTrainer`` asserts CUDA and selects fp16 only; this step autocasts to bf16 or
    fp16 on any device. The model's losses are already weighted and are summed as they are.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``. clip_max_norm: clip the global L2
        norm of all gradients to this value (0: no clipping). amp_precision: None (fp32), "bf16" or
        "fp16" (the latter with a ``GradScaler``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        *,
        clip_max_norm: float = 0.1,
        amp_precision: Optional[str] = None,
    ):
        # Only the three arguments both Detectron2 versions accept.
        super().__init__(model, data_loader, optimizer)
        if amp_precision is not None and amp_precision not in _AMP_DTYPES:
            raise ValueError(f"Unknown AMP precision {amp_precision!r}; expected 'bf16' or 'fp16'")
        self.clip_max_norm = clip_max_norm
        self.amp_precision = amp_precision
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = (
            torch.amp.GradScaler(self.device_type) if amp_precision == "fp16" else None
        )

    def run_step(self):
        assert self.model.training, "[MDETRSimpleTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(
            self.device_type,
            dtype=_AMP_DTYPES.get(self.amp_precision, torch.float32),
            enabled=self.amp_precision is not None,
        ):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss_dict.values())
        # Before backward, on every rank: all ranks stop together and no NaN reaches the weights.
        self._check_losses_finite(loss_dict)

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients
        else:
            losses.backward()

        self._write_metrics(loss_dict, data_time)

        if self.clip_max_norm > 0:
            # One norm over all parameters (official), not Detectron2's per-parameter clipping.
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_max_norm)
            if comm.is_main_process():
                get_event_storage().put_scalar("grad_norm", float(grad_norm), smoothing_hint=False)

        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _check_losses_finite(self, loss_dict: Mapping[str, torch.Tensor]) -> None:
        """Raise ``FloatingPointError`` naming the iteration and the non-finite loss term(s)."""
        names = sorted(loss_dict)
        values = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        finite = torch.isfinite(values).to(torch.int32)
        if comm.get_world_size() > 1:
            # A term counts as broken if it is non-finite on any rank: every rank raises.
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if bool(finite.all()):
            return
        bad = [k for k, ok in zip(names, finite.tolist()) if not ok]
        local = {k: float(v) for k, v in zip(names, values.tolist())}
        raise FloatingPointError(
            f"Loss became infinite or NaN at iteration={self.iter}: non-finite term(s) {bad} "
            f"(on any rank); this rank's loss_dict = {local}"
        )

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
