"""FlowRL's learned normaliser head ``log Z(x)`` (the paper's log partition function), from the prompt's mean
last hidden state.

The architecture is the one of ``verl-project/verl-recipe`` ``flowrl/flowrl_actor.py::ProjZModule`` (commit
``48ea0a79``; the paper's repository ``Xuekai-Zhu/FlowRL`` has the same module): ``num_layers - 1`` blocks of
Linear(H, H), GELU, LayerNorm(H), Dropout, then Linear(H, 1). The recipe attaches it to the actor module so it shares
the policy's optimizer (same learning rate) and checkpoint; ``divrl train`` does the same with a separate module: its
parameters are in the policy's AdamW, its weights in every checkpoint's ``trainer_state.pt`` (written atomically with
the rest), and it never reaches sampling (``divrl eval`` and vLLM see only the policy).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LogZHead(torch.nn.Module):
    """``log Z(x)`` from a prompt representation ``(N, H)`` → ``(N,)``."""

    def __init__(self, hidden_size: int, num_layers: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"LogZHead: num_layers must be >= 1, got {num_layers}")
        layers: list[torch.nn.Module] = []
        for _ in range(num_layers - 1):
            layers += [
                torch.nn.Linear(hidden_size, hidden_size),
                torch.nn.GELU(),
                torch.nn.LayerNorm(hidden_size),
                torch.nn.Dropout(dropout),
            ]
        layers.append(torch.nn.Linear(hidden_size, 1))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, prompt_hidden: Tensor) -> Tensor:
        out: Tensor = self.net(prompt_hidden)  # (N, 1)
        return out.squeeze(-1)  # (N,)
