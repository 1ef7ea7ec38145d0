"""Small attention models: ``transformer`` (sequences of numbers, ``nn.TransformerEncoder``) and
``gpt`` (token sequences: an ``Embedding``, causal attention blocks and a language-model head).

Both are small enough to train here in seconds (``transformer`` on ``mnist1d``, ``gpt`` on the
synthetic token task ``tokens``); their weights are the ones real attention models prune:
``MultiheadAttention``'s ``in_proj_weight`` and ``out_proj``, the feed-forward ``Linear`` layers and
the head. Embeddings and norms are left dense (prune them with ``include=``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sketchprune.errors import check


class SequenceTransformer(nn.Module):
    """A 1-D signal cut into patches, each patch a token (a ``Linear`` embedding plus a learned
    position), an ``nn.TransformerEncoder`` (pre-norm), the mean over positions and a ``Linear``
    classifier."""

    def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], width: int, depth: int, heads: int,
                 patch: int) -> None:
        super().__init__()
        check(len(input_shape) in (1, 2), f"transformer takes sequences, shape (length,) or (channels, length); "
                                          f"got input_shape {tuple(input_shape)}")
        check(min(width, depth, heads, patch) >= 1, "transformer's width, depth, heads and patch must be >= 1")
        check(width % heads == 0, f"transformer's width ({width}) must be a multiple of heads ({heads})")
        self.channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        check(length % patch == 0, f"transformer's patch ({patch}) must divide the sequence length ({length})")
        self.patch = patch
        self.embed = nn.Linear(self.channels * patch, width)
        self.positions = nn.Embedding(length // patch, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.channels, -1, self.patch).transpose(1, 2).flatten(2)  # (batch, tokens, c*p)
        h = self.embed(x) + self.positions.weight
        return self.head(self.encoder(h).mean(1))


class Block(nn.Module):
    """One GPT block: pre-norm causal self-attention and a GELU feed-forward, each residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)  # True: may not attend
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token and position embeddings, causal attention blocks, a final norm and a language-model
    head: the logits of the token that follows the sequence (read at its last position)."""

    def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], vocab: int | None, width: int, depth: int,
                 heads: int) -> None:
        super().__init__()
        check(len(input_shape) == 1, f"gpt takes token sequences, shape (length,); got input_shape {tuple(input_shape)}")
        check(min(width, depth, heads) >= 1, "gpt's width, depth and heads must be >= 1")
        check(width % heads == 0, f"gpt's width ({width}) must be a multiple of heads ({heads})")
        vocab = vocab or num_classes
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(input_shape[0], width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.tokens(x) + self.positions.weight[: x.shape[1]]
        return self.head(self.norm(self.blocks(h))[:, -1])


def transformer(*, num_classes: int = 10, input_shape: tuple[int, ...] = (40,), width: int = 32, depth: int = 2,
                heads: int = 4, patch: int = 4) -> nn.Module:
    """``depth`` pre-norm ``nn.TransformerEncoder`` layers of ``width`` over patches of ``patch`` values
    of a sequence (MNIST-1D's 40 values: 10 tokens), mean-pooled, and a linear classifier."""
    return SequenceTransformer(num_classes=num_classes, input_shape=input_shape, width=width, depth=depth,
                               heads=heads, patch=patch)


def gpt(*, num_classes: int = 16, input_shape: tuple[int, ...] = (16,), vocab: int = 0, width: int = 32,
        depth: int = 2, heads: int = 4) -> nn.Module:
    """A GPT of ``depth`` causal blocks on token sequences; the head predicts the next token, one of
    ``num_classes`` (``vocab``, the input's token count, defaults to it)."""
    return GPT(num_classes=num_classes, input_shape=input_shape, vocab=vocab or None, width=width, depth=depth,
               heads=heads)
