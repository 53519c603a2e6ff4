"""Compute-device choice: ``auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from qupath_rkd.errors import DeviceError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a usable :class:`torch.device`.

    Raises :class:`DeviceError` when CUDA is asked for but not available.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"unknown device {name!r}", hint="use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} was asked for, but CUDA is not available on this machine",
                hint="use --device cpu (or auto)",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"no CUDA device {dev.index} (this machine has {torch.cuda.device_count()})"
            )
    elif dev.type != "cpu":
        raise DeviceError(
            f"device type {dev.type!r} is not supported", hint="use auto, cpu or cuda"
        )
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype on CUDA (bf16 when supported, else fp16); None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
