"""The network: a GRU over tokens (deep) beside a linear layer over hashed n-grams (wide).

    tokens ─ embedding ─ GRU ─ [last, running max, running mean] ─ linear ─ logit_rnn ─ × a_rnn ─┐
                                                                                            (+) logit
    hashed n-gram weights ─────────────── gather · multiply · sum ─ (+ bias) ─ logit_wide ────┘

Each half is trained alone, for itself (export/recipe.py), so both are real classifiers;
the whole is their learned combination: a_wide · wide + a_rnn · rnn + bias, with a_wide
and the bias folded into the wide weights and bias (so the wide weights are exactly what
each bucket adds to the whole logit) and a_rnn kept as the buffer `rnn_weight`.
Training runs the GRU on packed sequences;
`step` is the exported form: one chunk of a padded batch plus the carried state, which
gives the same numbers (the GRU output at a sample's last real token is its state there,
whatever padding follows, because the GRU only looks back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from filterd.pipeline.features import BUCKETS


@dataclass
class ModelConfig:
    vocab_size: int = 30000
    embed: int = 64
    hidden: int = 96              # 128 was no better on validation and 1.6x slower to run
    buckets: int = BUCKETS
    dropout: float = 0.3          # on the pooled GRU features (cross-validated, docs/model.md)
    rnn_clip: float = 0.0         # > 0: the GRU logit is bounded, clip * tanh(logit / clip)


class SpamNet(nn.Module):
    rnn_weight: torch.Tensor   # a buffer (register_buffer below); annotated for mypy

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=0)
        self.gru = nn.GRU(cfg.embed, cfg.hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(3 * cfg.hidden, 1)
        # The wide weights start at zero: the branch begins neutral and learns fast.
        self.wide = nn.Parameter(torch.zeros(cfg.buckets))
        self.wide_bias = nn.Parameter(torch.zeros(1))
        # The GRU logit's weight in the whole (learned on out-of-fold logits; 1 = a plain sum).
        self.register_buffer("rnn_weight", torch.ones(1))

    def wide_logit(self, feat_ids: torch.Tensor, feat_w: torch.Tensor) -> torch.Tensor:
        # (batch, k) ids and weights → (batch,): a sparse dot product, summed in float64:
        # a message can have 50 000 features, and onnxruntime's float32 ReduceSum was then
        # off by 2e-4 from torch's (and from numpy's float64 over wide.npy).
        return (self.wide[feat_ids].double() * feat_w.double()).sum(dim=1).float()

    def pooled_logit(self, h: torch.Tensor, run_max: torch.Tensor, run_sum: torch.Tensor,
                     count: torch.Tensor) -> torch.Tensor:
        mean = run_sum / count.clamp(min=1.0).unsqueeze(1)
        logit = self.head(self.drop(torch.cat([h, run_max, mean], dim=1))).squeeze(1)
        if self.cfg.rnn_clip > 0:   # a bounded vote: no message is certain from its words alone
            logit = self.cfg.rnn_clip * torch.tanh(logit / self.cfg.rnn_clip)
        return logit

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, feat_ids: torch.Tensor,
                feat_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training/evaluation on whole messages: (logit, logit_rnn, logit_wide), each (batch,)."""
        x = self.embed(ids)                                   # (batch, time, embed)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, padding_value=-1.0)  # (b, t, hidden)
        mask = (torch.arange(out.size(1), device=out.device)[None, :] < lengths[:, None])
        run_max = out.max(dim=1).values                       # pads are -1, below any tanh output
        run_sum = (out * mask.unsqueeze(2)).sum(dim=1)
        logit_rnn = self.pooled_logit(h_n[0], run_max, run_sum, lengths.float())
        logit_wide = self.wide_logit(feat_ids, feat_w) + self.wide_bias
        return logit_wide + self.rnn_weight * logit_rnn, logit_rnn, logit_wide

    def step(self, tokens: torch.Tensor, lengths: torch.Tensor, feat_ids: torch.Tensor,
             feat_w: torch.Tensor, h: torch.Tensor, run_max: torch.Tensor, run_sum: torch.Tensor,
             count: torch.Tensor, wide_sum: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One chunk (the exported graph). lengths >= 1; state tensors are (batch, hidden)/(batch,)."""
        out, _ = self.gru(self.embed(tokens), h.unsqueeze(0))    # (batch, time, hidden)
        mask = (torch.arange(out.size(1))[None, :] < lengths[:, None]).unsqueeze(2)
        last = out.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.size(2))).squeeze(1)
        new_max = torch.maximum(run_max, out.masked_fill(~mask, -1.0).max(dim=1).values)
        new_sum = run_sum + (out * mask).sum(dim=1)
        new_count = count + lengths.to(count.dtype)
        new_wide = wide_sum + self.wide_logit(feat_ids, feat_w)
        logit_rnn = self.pooled_logit(last, new_max, new_sum, new_count)
        logit_wide = new_wide + self.wide_bias
        return (logit_wide + self.rnn_weight * logit_rnn, logit_rnn, logit_wide,
                last, new_max, new_sum, new_count, new_wide)


class StepModule(nn.Module):
    """Wraps SpamNet.step so torch.onnx.export sees a forward with named tensors."""

    def __init__(self, net: SpamNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, feat_ids: torch.Tensor,
                feat_w: torch.Tensor, h: torch.Tensor, run_max: torch.Tensor,
                run_sum: torch.Tensor, count: torch.Tensor,
                wide_sum: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.step(tokens, lengths, feat_ids, feat_w, h, run_max, run_sum, count,
                             wide_sum)


INPUTS = ["tokens", "lengths", "feat_ids", "feat_w", "h", "run_max", "run_sum", "count",
          "wide_sum"]
OUTPUTS = ["logit", "logit_rnn", "logit_wide", "h_out", "run_max_out", "run_sum_out",
           "count_out", "wide_sum_out"]
