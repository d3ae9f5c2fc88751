"""What every training DataModule shares: the (seed, epoch)-ordered shuffle, the train and validation
loaders, worker seeding. :class:`detector.training.datamodule.DetectionDataModule` and
:class:`detector.pretrain.data.ClassifierDataModule` add their datasets."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detector.data.coco import worker_init_fn

__all__ = ["EpochShuffleSampler", "LoaderDataModule"]


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``(seed, epoch)``, so epoch ``e`` visits images in the same
    order in every run and after a resume (Lightning calls ``set_epoch``). Under DDP Lightning's
    ``DistributedSampler`` does the same across processes, so this one serves single-process runs."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


class LoaderDataModule(pl.LightningDataModule):
    """A DataModule whose subclass builds ``train_dataset`` / ``val_dataset`` in ``setup``; this
    class makes their loaders.

    Args:
        batch_size: images per process (per GPU under DDP).
        num_workers: loader processes per process.
        seed: base seed of the shuffle (and of the subclass's augmentation; workers derive their own).
        collate_fn: stacks a list of dataset items into a batch.
    """

    def __init__(self, batch_size: int, num_workers: int, seed: int,
                 collate_fn: Callable[[Sequence[Any]], Any]) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.collate_fn = collate_fn
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    @property
    def has_validation(self) -> bool:
        """Whether a validation split is configured (subclasses say from their arguments)."""
        raise NotImplementedError

    def _loader(self, dataset: Dataset, train: bool, sampler: Sampler[int] | None = None,
                persistent: bool = True) -> DataLoader:
        distributed = self.trainer is not None and self.trainer.world_size > 1
        # A (seed, epoch)-seeded order: the same in every run and after a resume.
        if sampler is None and train and not distributed:
            sampler = EpochShuffleSampler(len(dataset), self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train if sampler is None else None,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            worker_init_fn=worker_init_fn,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, train=False)

    def evaluation_dataloader(self) -> DataLoader | None:
        """The validation set outside Lightning's loops (the end-of-fit weights comparison): this
        process's shard of it under DDP (Lightning adds that sampler only to the loaders it runs)."""
        if self.val_dataset is None:
            return None
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(self.val_dataset, num_replicas=trainer.world_size,
                                                          rank=trainer.global_rank, shuffle=False)
        return self._loader(self.val_dataset, train=False, sampler=sampler, persistent=False)  # read once
