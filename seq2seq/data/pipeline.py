"""Batches for training and evaluation: grouped by length, padded, shuffled, prefetched.

Batch order is a pure function of (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted run would: `Batches.dataset(epoch, skip)` starts mid-epoch. Grouping similar
lengths keeps padding (wasted recurrent steps) low; a batch's shape is (B, its longest row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from seq2seq.export_format import EOS, SOS, pad


def teacher_forcing(target: Sequence[int]) -> tuple[list[int], list[int]]:
    """Decoder input `<sos> y_1 … y_n` and decoder target `y_1 … y_n <eos>`."""
    return [SOS, *target], [*target, EOS]


class Batches:
    """Length-grouped batches over examples that each have one or more id sequences.

    Args:
        examples: list of examples; each is a tuple of int sequences and/or scalars.
        batch_size: examples per batch.
        length_of: the sorting key (e.g. the source length).
        make_batch: turns a list of examples into a tuple of numpy arrays.
        seed: shuffling seed.
        shuffle: shuffle batch order and group membership per epoch (training) or not.
        shard: (index, count): keep every count-th batch starting at index (one per worker).
    """

    def __init__(
        self, examples, batch_size, length_of, make_batch, seed=0, shuffle=True, shard=(0, 1)
    ):
        if not examples:
            raise ValueError("no examples to batch")
        self.examples = examples
        self.batch_size = batch_size
        self.lengths = np.array([length_of(e) for e in examples])
        self.make_batch = make_batch
        self.seed = seed
        self.shuffle = shuffle
        self.shard = shard

    def order(self, epoch: int) -> list[np.ndarray]:
        """The index batches of an epoch, deterministic in (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        noise = rng.random(len(self.examples)) if self.shuffle else np.zeros(len(self.examples))
        # Sort by length with random tie-breaking, cut into batches, then shuffle the batches.
        idx = np.lexsort((noise, self.lengths))
        batches = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        index, count = self.shard
        usable = len(batches) - len(batches) % count  # every worker gets as many batches
        return batches[index:usable:count] if count > 1 else batches

    def __len__(self) -> int:
        return len(self.order(0))

    def iterate(self, epoch: int = 0, skip: int = 0) -> Iterator[tuple]:
        for ids in self.order(epoch)[skip:]:
            yield self.make_batch([self.examples[i] for i in ids])

    def dataset(self, epoch: int = 0, skip: int = 0) -> tf.data.Dataset:
        first = self.make_batch([self.examples[0]])
        signature = tuple(tf.TensorSpec((None,) * a.ndim, tf.as_dtype(a.dtype)) for a in first)
        return tf.data.Dataset.from_generator(
            lambda: self.iterate(epoch, skip), output_signature=signature
        ).prefetch(tf.data.AUTOTUNE)


def translation_batch(examples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source ids, decoder input, decoder target) from (source, target) id-list pairs."""
    src = pad([e[0] for e in examples])
    pairs = [teacher_forcing(e[1]) for e in examples]
    return src, pad([p[0] for p in pairs]), pad([p[1] for p in pairs])


def classification_batch(examples) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, label index) from (ids, label) pairs."""
    return pad([e[0] for e in examples]), np.array([e[1] for e in examples], dtype=np.int32)
