"""``tokens``: a synthetic next-token task, generated here (no download), for token models (``gpt``).

Sequences of ``length`` tokens over a vocabulary of ``vocab`` come from a fixed random second-order
Markov chain: the first two tokens are uniform, and every later token is, with probability
``1 - noise``, the chain's rule for the two tokens before it (a fixed random table of
``vocab x vocab`` entries) and otherwise a uniform token. The target is the token that follows the
sequence. Predicting it needs the last two positions (attention to the one before the last): the
last token alone gives about a third of the rule's accuracy. The best possible accuracy is
``1 - noise + noise / vocab`` (0.8125 by default); chance is ``1 / vocab``.
"""

from __future__ import annotations

import torch

from sketchprune.errors import check


def markov_tokens(*, samples: int = 5000, vocab: int = 16, length: int = 16, noise: float = 0.2,
                  train_split: float = 0.8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(train_x, train_y, test_x, test_y)`` of the task (int64), the same for the same arguments."""
    check(samples >= 10, f"tokens samples must be >= 10, got {samples}")
    check(vocab >= 2, f"tokens vocab must be >= 2, got {vocab}")
    check(length >= 2, f"tokens length must be >= 2 (the rule reads two tokens), got {length}")
    check(0 <= noise <= 1, f"tokens noise must be in [0, 1], got {noise}")
    check(0 < train_split < 1, f"tokens train_split must be in (0, 1), got {train_split}")
    g = torch.Generator().manual_seed(seed)
    rule = torch.randint(vocab, (vocab, vocab), generator=g)
    seq = torch.empty(samples, length + 1, dtype=torch.long)
    seq[:, :2] = torch.randint(vocab, (samples, 2), generator=g)
    for t in range(2, length + 1):
        uniform = torch.randint(vocab, (samples,), generator=g)
        seq[:, t] = torch.where(torch.rand(samples, generator=g) < noise, uniform, rule[seq[:, t - 2], seq[:, t - 1]])
    n = int(samples * train_split)
    check(0 < n < samples, f"tokens train_split {train_split} leaves no train or no test sample of {samples}")
    x, y = seq[:, :-1], seq[:, -1]
    return x[:n].clone(), y[:n].clone(), x[n:].clone(), y[n:].clone()

