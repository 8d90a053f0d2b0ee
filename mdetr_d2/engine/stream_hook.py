"""``TrainStreamHook``: what, besides weights, optimizer, schedule and EMA, decides the rest of a
run, kept so that ``--resume`` continues it bit for bit (the training stream's state and the
training process's random numbers)."""
import logging
from typing import Optional

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from mdetr_d2.data.train_stream import MODEL, BadRecordBudgetError, TrainDataStream, derive_seed

logger = logging.getLogger(__name__)


class TrainStreamHook(HookBase):
    """Makes a resumed run equal the uninterrupted one, and reports skipped training records.

    * Before every step, torch's global generators (dropout, ...) are seeded from (run seed,
      iteration, process rank): the model's random numbers at iteration ``i`` do not depend on
      what ran before in the process.
    * After every step that writes a checkpoint (the ``PeriodicCheckpointer`` rule: every
      ``period`` iterations and the last one), every process's stream state is gathered, so that
      the main process's checkpoint holds all of them; the skipped records of all processes are
      merged, the summary is logged and the bad-record budget is enforced over all of them.
      Register it before the ``PeriodicCheckpointer``.

    Its ``state_dict`` is a hook state: Detectron2's trainers save it in every checkpoint under
    ``trainer/hooks/TrainStreamHook`` and give it back on ``--resume``.
    """

    def __init__(self, stream: TrainDataStream, checkpoint_period: int):
        self.stream = stream
        self.checkpoint_period = checkpoint_period
        self._gathered: Optional[list] = None  # every process's stream state ...
        self._gathered_at = -1  # ... after this iteration
        self._loaded = False

    def before_train(self):
        if self.trainer.start_iter > 0 and not self._loaded:  # resumed from an older checkpoint
            self._restore(None, self.trainer.start_iter - 1)

    def after_train(self):
        self.stream.close()  # the loader's workers end with the training, not at garbage collection

    def before_step(self):
        torch.manual_seed(derive_seed(self.stream.seed, MODEL, self.trainer.iter, comm.get_rank()))

    def after_step(self):
        iteration = self.trainer.iter
        if (iteration + 1) % self.checkpoint_period and iteration < self.trainer.max_iter - 1:
            return
        states = comm.all_gather(self.stream.state_dict())
        for state in states:
            self.stream.bad_records.update(state["bad_records"])
        self._gathered, self._gathered_at = states, iteration
        summary = self.stream.summary()
        if comm.is_main_process():
            logger.info("Iteration %d: %s", iteration, summary)
        if len(self.stream.bad_records) > self.stream.max_bad_records:
            raise BadRecordBudgetError(
                "more training records could not be read or encoded than "
                f"DATALOADER.MAX_BAD_RECORD_FRACTION allows: {summary}"
            )

    def state_dict(self) -> dict:
        """The stream layout and every process's stream state (None for the other processes' when
        they were not gathered at this iteration)."""
        if comm.get_world_size() == 1:
            ranks = [self.stream.state_dict()]
        elif self._gathered_at == self.trainer.iter:
            ranks = self._gathered
        else:
            ranks = None
        return {
            "seed": self.stream.seed,
            "world_size": comm.get_world_size(),
            "batch_size": self.stream.batch_size,
            "aspect_ratio_grouping": self.stream.aspect_ratio_grouping,
            "ranks": ranks,
        }

    def load_state_dict(self, state: dict) -> None:
        # Detectron2's trainers set `iter` from the checkpoint before loading the hooks' states.
        self._restore(state, self.trainer.iter)
        self._loaded = True

    def _restore(self, state: Optional[dict], iteration: int) -> None:
        """Restore this process's stream from a checkpoint written after ``iteration``; without a
        usable state (an older checkpoint, another number of processes or batch size), continue at
        the position the iteration implies, with a warning: that resume is not exact."""
        layout = (comm.get_world_size(), self.stream.batch_size, self.stream.aspect_ratio_grouping)
        if state is not None and state["ranks"] is not None and layout == (
            state["world_size"], state["batch_size"], state["aspect_ratio_grouping"]
        ):
            self.stream.load_state_dict(state["ranks"][comm.get_rank()])
            for other in state["ranks"]:
                self.stream.bad_records.update(other["bad_records"])
            return
        position = (iteration + 1) * self.stream.batch_size
        reason = (
            "has no training-stream state" if state is None or state["ranks"] is None
            else f"was written by {state['world_size']} process(es) x {state['batch_size']} "
            f"images (aspect-ratio grouping {state['aspect_ratio_grouping']})"
        )
        logger.warning(
            "The checkpoint %s: the data stream continues at local position %d (iteration %d x "
            "%d images), but the resumed run is not exactly the uninterrupted one", reason,
            position, iteration + 1, self.stream.batch_size,
        )
        self.stream.load_state_dict(
            {"seed": state["seed"] if state is not None else self.stream.seed, "position": position}
        )
