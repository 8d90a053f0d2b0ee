"""The training data stream: a seed-derived order of records that a checkpoint resumes exactly, and
the bad-record policy.

Every sample of a run has a *global stream position* ``g = 0, 1, 2, ...``; process ``r`` of ``W``
takes positions ``g = k * W + r`` (``k`` is its local position), as Detectron2's
``TrainingSampler`` shards its stream. Everything about the sample at ``g`` is a function of the run
seed and ``g`` alone:

* the record: epoch ``g // N`` is a permutation of the ``N`` records drawn from ``(seed, epoch)``;
* its augmentation: numpy's, Python's and torch's global generators are seeded from ``(seed, g)``
  around the mapper call (and restored after), whatever worker process runs it;
* the replacement of a record that cannot be read or encoded (``BadRecordError``): attempt ``a`` at
  ``g`` reads the record drawn from ``(seed, g, a)``.

So the stream does not depend on ``DATALOADER.NUM_WORKERS`` or on process state, and its state is
small: the run seed, the next local position and, with aspect-ratio grouping, the positions waiting
in the two buckets. A resumed run continues where the checkpoint stopped instead of replaying the
start of the data.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import math
import random
import weakref
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

from .dataset_mapper import BadRecordError

logger = logging.getLogger(__name__)

__all__ = [
    "BadRecordBudgetError",
    "TrainDataStream",
    "TrainingSet",
    "build_train_stream",
    "derive_seed",
    "load_train_set",
    "max_bad_records",
]

# Domain tags: the streams of random numbers drawn from one run seed never overlap.
ORDER, REPLACEMENT, AUGMENTATION, MODEL = range(4)

# Records tried for one stream position before the stream gives up (every one failing means a
# systematic problem: wrong image root, wrong text encoder, ...).
MAX_ATTEMPTS = 16


class BadRecordBudgetError(RuntimeError):
    """More training records could not be read or encoded than
    ``DATALOADER.MAX_BAD_RECORD_FRACTION`` allows."""


def derive_seed(*keys: int) -> int:
    """A 64-bit seed that depends on every key (numpy's ``SeedSequence`` hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])


@contextlib.contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed numpy's, Python's and torch's (CPU) global generators, restoring them afterwards: the
    augmentations (which draw from the global generators) become a function of ``seed``, and the
    caller's random state is untouched (with ``NUM_WORKERS == 0`` it is the training process's)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    torch_state = torch.get_rng_state()
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


class _Item(NamedTuple):
    """One stream position as it leaves a loader worker."""

    position: int  # local position k
    output: Any  # the mapper's output, None when every attempt failed
    skipped: list  # (record index, message) of each record that failed before it


class _PositionDataset(Dataset):
    """``dataset[k]`` = the mapped record at local stream position ``k`` (see the module doc)."""

    def __init__(self, records: Dataset, mapper: Callable, seed: int, rank: int, world_size: int):
        self.records = records
        self.mapper = mapper
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._epoch, self._order = -1, None  # permutation of the latest epoch (cached per process)

    def __len__(self) -> int:
        return len(self.records)

    def record_index(self, g: int, attempt: int) -> int:
        """Index of the record read by attempt ``attempt`` at global position ``g``."""
        if attempt:
            rng = np.random.default_rng(derive_seed(self.seed, REPLACEMENT, g, attempt))
            return int(rng.integers(len(self.records)))
        epoch, offset = divmod(g, len(self.records))
        if epoch != self._epoch:
            rng = np.random.default_rng(derive_seed(self.seed, ORDER, epoch))
            self._epoch, self._order = epoch, rng.permutation(len(self.records))
        return int(self._order[offset])

    def __getitem__(self, position: int) -> _Item:
        g = position * self.world_size + self.rank
        skipped = []
        for attempt in range(MAX_ATTEMPTS):
            index = self.record_index(g, attempt)
            try:
                with _seeded_global_rngs(derive_seed(self.seed, AUGMENTATION, g, attempt)):
                    return _Item(position, self.mapper(self.records[index]), skipped)
            except BadRecordError as e:
                skipped.append((index, str(e)))
        return _Item(position, None, skipped)


def _identity(item: _Item) -> _Item:
    return item


class _Positions(Sampler):
    """The local positions ``start, start + 1, ...`` (an endless stream)."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class TrainDataStream:
    """The training loader of ``MDETRTrainer``: an endless iterable of batches (lists of mapper
    outputs) whose position, seed and bad-record count are checkpointed (``state_dict``).

    Records that raise ``BadRecordError`` in the mapper are replaced (see the module doc), logged
    once each with their name and reason, and counted; past ``max_bad_records`` distinct records
    the stream raises :class:`BadRecordBudgetError`. Other mapper errors stop training.

    Args:
        records: the training records (concatenated datasets).
        mapper: record -> model input dict.
        batch_size: images per process and iteration.
        seed: the run seed (non-negative).
        num_workers: loader worker processes (the stream does not depend on it).
        aspect_ratio_grouping: batch images whose width > height separately from the others
            (Detectron2's grouping: the consumed positions then vary per iteration).
        max_bad_records: distinct bad records tolerated before training stops.
        sources: (first record index, registered name) of each concatenated dataset, for
            messages.
        rank, world_size: this process and the number of training processes.
    """

    def __init__(
        self,
        records: Sequence[dict],
        mapper: Callable,
        *,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        aspect_ratio_grouping: bool = False,
        max_bad_records: int = 0,
        sources: Sequence[tuple[int, str]] = (),
        rank: int = 0,
        world_size: int = 1,
    ):
        if not len(records):
            raise ValueError("the training set has no records")
        if seed < 0:
            raise ValueError(f"the stream seed must be non-negative, got {seed}")
        self.records = records if isinstance(records, Dataset) else DatasetFromList(
            list(records), copy=False
        )
        self.mapper = mapper
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.max_bad_records = max_bad_records
        self.sources = list(sources)
        self.rank, self.world_size = rank, world_size
        # Resumable state (what the main process has consumed; the loader may have prefetched more).
        self.position = 0  # next local position to take from the loader
        self.pending: list[list[int]] = [[], []]  # aspect-ratio buckets: local positions waiting
        self.bad_records: dict[int, str] = {}  # record index -> first failure message
        self.num_skips = 0
        self._started = False
        # The running generator, weakly: a strong reference would make a cycle with its frame, and
        # a loader torn down by the cycle collector waits seconds for each of its workers.
        self._batches: weakref.ref | None = None

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[list]:
        # A generator: nothing runs until the first batch is requested, after resume_or_load has
        # restored the state (Detectron2 v0.6 calls iter() in SimpleTrainer.__init__).
        batches = self._generate()
        self._batches = weakref.ref(batches)
        return batches

    def close(self) -> None:
        """Stop the loader and its worker processes (at the end of training)."""
        batches = self._batches() if self._batches is not None else None
        if batches is not None:
            batches.close()

    def _generate(self) -> Iterator[list]:
        dataset = _PositionDataset(self.records, self.mapper, self.seed, self.rank,
                                   self.world_size)
        self._started = True
        logger.info(
            "Training stream: %d records, seed %d, process %d of %d starts at local position %d%s",
            len(self.records), self.seed, self.rank, self.world_size, self.position,
            f" ({sum(map(len, self.pending))} waiting in aspect-ratio buckets)"
            if self.aspect_ratio_grouping else "",
        )
        loader = DataLoader(
            dataset,
            batch_size=None if self.aspect_ratio_grouping else self.batch_size,
            sampler=_Positions(self.position),
            num_workers=self.num_workers,
            collate_fn=_identity if self.aspect_ratio_grouping else list,
            # The workers' base seed is drawn from this generator, not from the training process's.
            generator=torch.Generator().manual_seed(self.seed),
        )
        if not self.aspect_ratio_grouping:
            for items in loader:
                batch = [self._accept(item) for item in items]
                self.position = items[-1].position + 1
                yield batch
            return
        # Re-create the samples that were waiting in the buckets at the checkpoint (they are
        # functions of their positions; their skips were counted before).
        buckets = [
            [(k, self._accept(dataset[k], count=False)) for k in bucket] for bucket in self.pending
        ]
        for item in loader:
            output = self._accept(item)
            self.position = item.position + 1
            bucket = buckets[0 if output["width"] > output["height"] else 1]
            bucket.append((item.position, output))
            batch = None
            if len(bucket) == self.batch_size:
                batch = [out for _, out in bucket]
                bucket.clear()
            self.pending = [[k for k, _ in b] for b in buckets]
            if batch is not None:
                yield batch

    def _accept(self, item: _Item, count: bool = True) -> Any:
        """Count and log the item's skipped records, enforce the budget, return its output."""
        for index, message in item.skipped if count else ():
            self.num_skips += 1
            if index in self.bad_records:
                continue
            self.bad_records[index] = message
            if len(self.bad_records) > self.max_bad_records:
                raise BadRecordBudgetError(
                    f"{len(self.bad_records)} training record(s) could not be read or encoded, "
                    f"more than the {self.max_bad_records} allowed "
                    f"(DATALOADER.MAX_BAD_RECORD_FRACTION): " + self.summary(limit=20)
                )
            logger.warning(
                "Skipped training record %s: %s (%d distinct bad record(s) so far; at most %d "
                "allowed)", self.describe(index), message, len(self.bad_records),
                self.max_bad_records,
            )
        if item.output is None:
            raise BadRecordBudgetError(
                f"{MAX_ATTEMPTS} records in a row failed at stream position {item.position} (a "
                f"systematic problem, e.g. the image root or the text encoder?): "
                + "; ".join(f"{self.describe(i)}: {m}" for i, m in item.skipped[-3:])
            )
        return item.output

    # ------------------------------------------------------------------ reporting
    def describe(self, index: int) -> str:
        """``dataset 'name' index i``: where record ``index`` of the concatenation comes from."""
        starts = [start for start, _ in self.sources]
        i = bisect.bisect_right(starts, index) - 1
        if i < 0:
            return f"index {index}"
        start, name = self.sources[i]
        return f"dataset {name!r} index {index - start}"

    def summary(self, limit: int = 10) -> str:
        """One line: how many records were skipped, and which (the first ``limit``)."""
        if not self.bad_records:
            return "no bad training records"
        shown = [f"{self.describe(i)}: {m}" for i, m in sorted(self.bad_records.items())[:limit]]
        more = len(self.bad_records) - len(shown)
        return (
            f"{len(self.bad_records)} bad training record(s) skipped ({self.num_skips} skips, at "
            f"most {self.max_bad_records} allowed): " + "; ".join(shown)
            + (f"; ... {more} more" if more else "")
        )

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """This process's state: seed, next local position, waiting positions, bad records."""
        return {
            "seed": self.seed,
            "position": self.position,
            "pending": [list(b) for b in self.pending],
            "bad_records": dict(self.bad_records),
            "num_skips": self.num_skips,
        }

    def load_state_dict(self, state: dict) -> None:
        if self._started:
            raise RuntimeError("the training stream has started: its state can no longer be set")
        self.seed = int(state["seed"])
        self.position = int(state["position"])
        self.pending = [list(b) for b in state.get("pending", ([], []))]
        self.bad_records = {int(i): m for i, m in state.get("bad_records", {}).items()}
        self.num_skips = int(state.get("num_skips", 0))


def max_bad_records(fraction: float, num_records: int) -> int:
    """The bad-record budget: ``ceil(fraction * num_records)`` (so any fraction > 0 tolerates at
    least one bad record, and 0 none)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"DATALOADER.MAX_BAD_RECORD_FRACTION must be in [0, 1], got {fraction}")
    return math.ceil(fraction * num_records)


class TrainingSet(DatasetFromList):
    """The concatenated training records, serialized as Detectron2's loaders hold them, and where
    each registered dataset starts (``sources``: (first index, name)), to name bad records."""

    def __init__(self, records: list[dict], sources: Sequence[tuple[int, str]]):
        super().__init__(records, copy=False)
        self.sources = list(sources)


def load_train_set(names: str | Sequence[str], filter_empty: bool = False) -> TrainingSet:
    """The records of the registered datasets ``names`` (``DATASETS.TRAIN``), concatenated."""
    records, sources = [], []
    for name in [names] if isinstance(names, str) else names:
        sources.append((len(records), name))
        records.extend(get_detection_dataset_dicts([name], filter_empty=filter_empty))
    return TrainingSet(records, sources)


def _train_stream_from_config(cfg: CfgNode, mapper: Callable, dataset: Dataset | None = None):
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN!r}: MDETR's training stream "
            "samples the records uniformly ('TrainingSampler'), as the official code does"
        )
    if dataset is None:
        dataset = load_train_set(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "seed": cfg.SEED,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "max_bad_record_fraction": cfg.DATALOADER.MAX_BAD_RECORD_FRACTION,
    }


@configurable(from_config=_train_stream_from_config)
def build_train_stream(
    dataset: Dataset | Sequence[dict],
    mapper: Callable,
    *,
    total_batch_size: int,
    seed: int,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = False,
    max_bad_record_fraction: float = 0.001,
) -> TrainDataStream:
    """This process's training stream over ``dataset`` (sampled uniformly, like the official
    ``ConcatDataset``), in the shape of Detectron2's ``build_detection_train_loader``;
    ``build_train_stream(cfg, mapper[, dataset=...])`` reads the arguments from a config and loads
    ``DATASETS.TRAIN`` when no dataset is given.

    Args:
        dataset: the training records (a :class:`TrainingSet` from :func:`load_train_set` names
            each record's dataset in messages).
        mapper: record -> model input dict.
        total_batch_size: images per iteration over all processes (``SOLVER.IMS_PER_BATCH``).
        seed: the run seed; when negative, a random seed shared by all processes (saved in
            checkpoints, so a resumed run keeps it).
        num_workers, aspect_ratio_grouping: as for Detectron2's train loader.
        max_bad_record_fraction: the bad-record budget (:func:`max_bad_records`).
    """
    world_size = comm.get_world_size()
    if total_batch_size % world_size:
        raise ValueError(
            f"total batch size {total_batch_size} is not divisible by the {world_size} training "
            "processes"
        )
    if seed < 0:
        seed = comm.shared_random_seed()
    budget = max_bad_records(max_bad_record_fraction, len(dataset))
    logger.info("Bad-record budget: %d of %d training records", budget, len(dataset))
    return TrainDataStream(
        dataset,
        mapper,
        batch_size=total_batch_size // world_size,
        seed=seed,
        num_workers=num_workers,
        aspect_ratio_grouping=aspect_ratio_grouping,
        max_bad_records=budget,
        sources=getattr(dataset, "sources", ()),
        rank=comm.get_rank(),
        world_size=world_size,
    )
