"""A small decoder-only transformer language model on synthetic token sequences.

Matmul-heavy by design: this is the workload where precision tricks show on a GPU (bf16 tensor
cores), unlike the autoencoder whose step is dominated by overhead. The tokens come from a seeded
random Markov chain, so there is structure to learn (the loss falls below log(vocab)) without any
download; sizes are settable with ``--param transformer.d_model=512`` and friends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from harness.spec import RunSpec
from harness.workload import Workload, register_workload
from harness.workloads.data import Split, TensorDataModule, seeded_split


def markov_tokens(count: int, length: int, vocab: int, seed: int, branching: int = 4) -> torch.Tensor:
    """``count`` sequences of ``length`` tokens; each token has ``branching`` likely successors."""
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab, (vocab, branching), generator=generator)
    weights = torch.rand(vocab, branching, generator=generator) + 0.1
    tokens = torch.empty(count, length, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab, (count,), generator=generator)
    for position in range(1, length):
        previous = tokens[:, position - 1]
        choice = torch.multinomial(weights[previous], 1, generator=generator).squeeze(1)
        tokens[:, position] = successors[previous, choice]
    return tokens


class TokenDataModule(TensorDataModule):
    """(input, next-token target) pairs from Markov-chain sequences; 80/10/10 train/val/test."""

    def __init__(self, sequences: int, seq_len: int, vocab: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sequences, self.seq_len, self.vocab = sequences, seq_len, vocab

    def load_splits(self) -> dict[str, Split]:
        tokens = markov_tokens(self.sequences, self.seq_len + 1, self.vocab, self.seed)
        pairs = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
        n = self.sequences
        n_val = n_test = max(1, n // 10)
        train, val, test = seeded_split(pairs, [n - n_val - n_test, n_val, n_test], self.seed)
        return {"train": train, "val": val, "test": test}


class TinyGPT(nn.Module):
    """Token + position embeddings, pre-norm causal transformer blocks, a tied output head."""

    def __init__(self, vocab: int, seq_len: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        block = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        for embedding in (self.token, self.position):
            nn.init.normal_(embedding.weight, std=0.02)  # GPT-2's init: unit-variance logits would start far above chance
        self.register_buffer("causal", torch.triu(torch.full((seq_len, seq_len), float("-inf")), diagonal=1), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.size(1)
        positions = torch.arange(length, device=tokens.device)
        h = self.token(tokens) + self.position(positions)
        h = self.blocks(h, mask=self.causal[:length, :length], is_causal=True)
        return self.norm(h) @ self.token.weight.t()


class LitTinyGPT(pl.LightningModule):
    """Next-token cross-entropy with AdamW and a StepLR schedule."""

    def __init__(self, lr: float = 1e-3, batch_size: int = 32, vocab: int = 256, seq_len: int = 64,
                 d_model: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        # extra optimizer arguments a trick may set before fit (fused-optimizer: fused=True or foreach=...)
        self.optimizer_options: dict[str, Any] = {}
        self.lr = lr
        self.batch_size = batch_size
        self.model = TinyGPT(vocab, seq_len, d_model, layers, heads)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def lm_loss(self, batch: Any) -> torch.Tensor:
        tokens, targets = batch
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # No self.log("train_loss") here: the harness writes each timing block's mean training loss
        # to the logger at the block edge, outside the measured time (see harness.measuring.measure).
        return self.lm_loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.lm_loss(batch), sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self.lm_loss(batch), sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01, **self.optimizer_options)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@register_workload
@dataclass
class TransformerWorkload(Workload):
    name = "transformer"
    summary = "Decoder-only transformer LM on synthetic Markov-chain tokens; matmul-heavy, sizes settable."

    # Defaults sized for a CPU run of a few seconds; on a GPU raise them (README: d_model=1024, layers=8...).
    vocab: int = 256
    seq_len: int = 64
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    sequences: int = 1024

    def __post_init__(self) -> None:
        for key in ("vocab", "seq_len", "d_model", "layers", "heads", "sequences"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.sequences < 10:
            raise ValueError(f"sequences must be >= 10 for a train/val/test split, got {self.sequences}")

    def checkpoint_blocks(self, module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
        """Each transformer block (nn.TransformerEncoder calls them one by one)."""
        assert isinstance(module, LitTinyGPT)
        return [(f"model.blocks.layers.{i}", layer) for i, layer in enumerate(module.model.blocks.layers)]

    def build_module(self, spec: RunSpec) -> LitTinyGPT:
        return LitTinyGPT(lr=spec.lr, batch_size=spec.batch_size, vocab=self.vocab, seq_len=self.seq_len,
                          d_model=self.d_model, layers=self.layers, heads=self.heads)

    def dataset_label(self, spec: RunSpec) -> str:
        return "markov-tokens"  # --dataset does not apply: the tokens are this workload's own

    def train_samples(self, dataset: str, synthetic_size: int) -> int:
        held_out = max(1, self.sequences // 10)  # val and test each, as TokenDataModule splits
        return self.sequences - 2 * held_out

    def build_datamodule(self, spec: RunSpec) -> TokenDataModule:
        return TokenDataModule(self.sequences, self.seq_len, self.vocab, batch_size=spec.batch_size,
                               loader=spec.loader, seed=spec.seed, num_workers=spec.num_workers)

    def plain_loss(self, module: pl.LightningModule, batch: Any) -> torch.Tensor:
        assert isinstance(module, LitTinyGPT)
        return module.lm_loss(batch)

    @property
    def chance_loss(self) -> float:
        return math.log(self.vocab)
