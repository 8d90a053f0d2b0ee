"""Exponential moving average of the model (official `--ema`, reference §8.1 and §9.2 item 18)."""
import copy
from typing import Dict

import torch
from detectron2.engine import HookBase
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, else ``model``."""
    if isinstance(model, (DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


class ModelEMA:
    """A frozen copy of a model whose state dict follows ``ema = decay * ema + (1 - decay) *
    model``.

    Every state-dict entry is averaged, buffers included, as officially. Integer entries (e.g.
    BatchNorm's ``num_batches_tracked``) are copied instead: averaging them in floating point and
    truncating on the way back can only drift downwards.

    It is a Detectron2 checkpointable (``state_dict``/``load_state_dict``): the trainer registers it
    as ``model_ema``, so checkpoints hold a plain state dict under that key, the official file
    layout.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998):
        self.decay = decay
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        # Set by load_state_dict: tells the trainer whether a checkpoint restored the average.
        self.loaded = False

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step towards ``model``'s current state."""
        source = unwrap_model(model).state_dict()
        ema_float, model_float = [], []
        for key, ema_value in self.module.state_dict().items():
            value = source[key].detach()
            if ema_value.dtype.is_floating_point:
                ema_float.append(ema_value)
                model_float.append(value.to(ema_value.dtype))
            else:
                ema_value.copy_(value)
        if ema_float:
            torch._foreach_mul_(ema_float, self.decay)
            torch._foreach_add_(ema_float, model_float, alpha=1.0 - self.decay)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average from ``model``'s current state (official: re-made after `--load`)."""
        self.module.load_state_dict(unwrap_model(model).state_dict())

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state_dict)
        self.loaded = True


class EMAHook(HookBase):
    """Updates a :class:`ModelEMA` after every optimizer step.

    Registered before the checkpoint and evaluation hooks so that they see the EMA of the same step
    (``after_step``: ``HookBase.after_backward`` exists only on Detectron2 main).
    """

    def __init__(self, model_ema: ModelEMA):
        self.model_ema = model_ema

    def after_step(self):
        self.model_ema.update(self.trainer.model)
