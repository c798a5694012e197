"""`SurrogateLabelBatchSampler`: random images in blocks of m that share a random surrogate label.

This is the shared-feature stream of Sharing Matters (Milbich, Roth et al.). Each epoch draws a
seeded permutation of the dataset (no image twice within an epoch), cuts it into batches, and
cuts every batch into blocks of ``m`` consecutive images. Block k gets a surrogate label s_k
drawn uniformly from {0..L-1} excluding s_{k-1} and s_{k-2} (L = ``num_surrogate_labels``), the
chain running across batch boundaries and on from one epoch into the next (the official
``RandomizedDataset_wLabel`` keeps its label state in the dataset object; without DataLoader
workers it runs on across epochs), starting with nothing excluded at epoch 0. A surrogate
"class" is thus ``m`` random images, almost always of different ground-truth classes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dmlkit.data.epoch_sampler import EpochBatchSampler, check_blocks
from dmlkit.errors import CheckpointError, ConfigError


class SurrogateLabelBatchSampler(EpochBatchSampler):
    """A torch ``batch_sampler`` yielding lists of dataset indices; labels come from the sampler.

    The stream is a pure function of ``(seed, epoch)`` (an epoch's first labels depend on the
    previous epoch's last two, recomputed from the seed when needed, e.g. after a resume: nothing
    beyond ``state_dict()`` is needed). ``surrogate_labels(batch_idx)`` returns
    the labels of batch ``batch_idx`` of the current epoch; they do not depend on how far the
    iterator has run, so they stay right when a DataLoader pre-fetches. As with
    ``DistributedSampler``, call ``set_epoch`` before each epoch: otherwise every epoch repeats the
    same stream.

    ``drop_last=True``: ``len(self) = N // batch_size``; the last ``N % batch_size`` images of the
    permutation are not seen that epoch (different ones each epoch). ``drop_last=False``:
    ``ceil(N / batch_size)`` batches; the last one is topped up with the first images of the
    permutation, so every batch is full (no index twice within a batch) and those images are seen
    twice that epoch.

    Exact resume: ``state_dict()`` records the epoch and how many batches the iterator yielded.
    With ``DataLoader(num_workers>0)`` the iterator runs ahead of the loop (pre-fetching); then
    checkpoint at epoch ends, or resume with ``set_epoch(epoch, start_batch=batches_done)``.

    Alone, with any pytorch-metric-learning loss:

    >>> from pytorch_metric_learning.losses import TripletMarginLoss
    >>> sampler = SurrogateLabelBatchSampler(10, batch_size=4, m=2, num_surrogate_labels=5)
    >>> len(sampler)
    2
    >>> embeddings = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    >>> sampler.set_epoch(0)
    >>> for b, idx in enumerate(sampler):
    ...     labels = sampler.surrogate_labels(b)
    ...     loss = TripletMarginLoss()(embeddings[idx], labels)
    >>> bool(labels[0] == labels[1]) and bool(labels[1] != labels[2])
    True

    In a training loop (``start_batch`` is 0 unless resuming mid-epoch)::

        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=4)
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch, start_batch)
            for b, (images, gt, _) in enumerate(loader, start=start_batch):
                surrogate = sampler.surrogate_labels(b)
            start_batch = 0
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        m: int = 4,
        num_surrogate_labels: int = 196,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if m < 2:
            raise ConfigError(
                f"surrogate-label blocks of m={m} image(s) have no positive pair: set m >= 2"
            )
        if batch_size < m:
            raise ConfigError(
                f"batch_size {batch_size} is smaller than one surrogate-label block of m={m}: "
                f"raise batch_size to a multiple of {m} or lower m"
            )
        check_blocks(batch_size, m, ("batch_size ", "the block size m="))
        if num_surrogate_labels < 3:
            raise ConfigError(
                f"num_surrogate_labels={num_surrogate_labels}: need >= 3 so that each block's "
                "label can differ from the previous two"
            )
        if num_samples < batch_size:
            raise ConfigError(
                f"the dataset has {num_samples} samples, fewer than one batch of {batch_size}: "
                "lower batch_size"
            )
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.num_samples, self.batch_size, self.m = num_samples, batch_size, m
        self.num_surrogate_labels, self.seed, self.drop_last = num_surrogate_labels, seed, drop_last
        self._plan_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._tails: dict[int, list[int]] = {-1: []}  # epoch -> its last two block labels

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + int(rest > 0 and not self.drop_last)

    def _draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch ``epoch``'s permutation of the dataset and one uniform number per block."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.num_samples)
        return perm, rng.random(len(self) * (self.batch_size // self.m))

    def _chain(self, uniform: np.ndarray, previous: list[int]) -> np.ndarray:
        """Block labels continuing the chain after ``previous`` (the last two labels so far).

        Block k draws uniformly among the labels other than s_{k-1}, s_{k-2}: a rank r in
        {0..L-1-|forbidden|} steps over the forbidden labels in increasing order.
        """
        labels = list(previous)
        for u in uniform:
            forbidden = sorted(labels[-2:])
            label = int(u * (self.num_surrogate_labels - len(forbidden)))
            for f in forbidden:
                label += label >= f
            labels.append(label)
        return np.asarray(labels[len(previous):], dtype=np.int64)

    def _tail(self, epoch: int) -> list[int]:
        """The last two block labels of epoch ``epoch`` ([] for epoch -1), recomputed from the
        nearest known epoch before it (so a resumed sampler matches an uninterrupted one)."""
        known = max(e for e in self._tails if e <= epoch)
        tail = self._tails[known]
        for e in range(known + 1, epoch + 1):
            tail = self._chain(self._draws(e)[1], tail)[-2:].tolist()
            self._tails[e] = tail
        return tail

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch ``epoch``'s indices (batches x batch_size) and block labels (batches x blocks)."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1:]
        perm, uniform = self._draws(epoch)
        n_batches = len(self)
        total = n_batches * self.batch_size
        top_up = perm[: max(0, total - self.num_samples)]
        indices = np.concatenate([perm, top_up])[:total].reshape(n_batches, self.batch_size)
        labels = self._chain(uniform, self._tail(epoch - 1))
        self._tails[epoch] = labels[-2:].tolist()
        labels = labels.reshape(n_batches, -1)
        self._plan_cache = (epoch, indices, labels)
        return indices, labels

    def __iter__(self) -> Iterator[list[int]]:
        indices, _ = self._plan(self.epoch)
        start, self.start_batch = self.start_batch, 0
        for b in range(start, len(indices)):
            self.start_batch = b + 1
            yield self.local(indices[b])
        self.start_batch = 0

    def global_batch(self, batch_idx: int) -> np.ndarray:
        """Sample indices of the whole global batch ``batch_idx`` of this epoch."""
        return self._plan(self.epoch)[0][batch_idx]

    def surrogate_labels(self, batch_idx: int) -> torch.Tensor:
        """Surrogate labels (int64, shape (batch_size,)) of batch ``batch_idx`` of this epoch:
        the whole global batch's, also on a `shard`ed sampler (whose slices a method gathers)."""
        if not 0 <= batch_idx < len(self):
            raise IndexError(f"batch_idx {batch_idx} out of range for {len(self)} batches")
        _, labels = self._plan(self.epoch)
        return torch.from_numpy(labels[batch_idx]).repeat_interleave(self.m)

    def _config(self) -> dict[str, int | bool]:
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "m": self.m,
            "num_surrogate_labels": self.num_surrogate_labels,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }

    def state_dict(self) -> dict[str, int | bool]:
        """Config plus position: ``epoch`` and ``start_batch`` (batches already yielded)."""
        return {**self._config(), "epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: dict[str, int | bool]) -> None:
        """Resume at the saved epoch and batch; the config must match the saved one."""
        config = self._config()
        saved = {k: state.get(k) for k in config}
        if saved != config:
            diff = ", ".join(f"{k}: saved {saved[k]}, now {v}" for k, v in config.items()
                             if saved[k] != v)
            raise CheckpointError(
                f"surrogate-label sampler state does not match this config ({diff}): "
                "resume with the saved data settings"
            )
        self.set_epoch(int(state["epoch"]), int(state["start_batch"]))
