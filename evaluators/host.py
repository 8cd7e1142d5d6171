"""Where the host's own training and scoring run: its CUDA GPU when there is one, else its CPU."""

from __future__ import annotations

import torch

HOST_DEVICES = ("auto", "cpu", "cuda")


def host_device(choice: str) -> torch.device:
    """The torch device for `choice`: "cpu", "cuda" (refused when torch sees no GPU), or "auto" (the GPU when
    torch sees one)."""
    if choice not in HOST_DEVICES:
        raise ValueError(f"the host device must be one of {', '.join(HOST_DEVICES)}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("host device 'cuda' asked for, but torch sees no CUDA GPU on this machine (a CPU build of "
                         "torch, or no driver); use 'cpu' or 'auto'")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")
