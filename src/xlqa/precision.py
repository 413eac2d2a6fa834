"""Precision: choosing bf16, fp16 or fp32 for the hardware, autocast, and the T5 family's fp16 policy."""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from xlqa.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 dot products in hardware (AVX512-BF16 or AMX)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # pragma: no cover - probe unavailable on this build
            continue
    return False


def choose_precision(requested: str = "auto", device: torch.device | str | None = None) -> str:
    """The mixed-precision mode: bf16 where the hardware supports it, else fp32.

    ``auto`` picks bf16 on CUDA devices with bf16 support and on CPUs with native bf16 arithmetic (AVX512-BF16,
    AMX), where it trains about 1.7x faster than fp32; fp32 elsewhere (emulated bf16 is slower than fp32).
    fp16 is only used when asked for explicitly.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if requested != "auto":
        if requested == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("bf16 was requested but this GPU does not support it; use --precision fp32")
        if requested == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
            _warn_emulated_bf16()
        return requested
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if dev.type == "cpu" and cpu_has_native_bf16() else "fp32"


@functools.cache
def _warn_emulated_bf16() -> None:  # once per process
    log.warning(
        "--precision bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): emulated, its matrix products "
        "run about 100x slower than fp32 (measured on an AVX2 AMD EPYC); --precision auto picks fp32 here"
    )


def autocast(precision: str, device: torch.device | str):
    """A context manager running the forward pass in ``precision`` (no-op for fp32)."""
    dev = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(dev.type, dtype=dtype)


T5_FAMILY = ("t5", "mt5", "umt5", "longt5", "switch_transformers")


def is_t5_family(model_or_config) -> bool:
    """True for T5, mT5, umT5, ByT5, LongT5 and Switch Transformers (a model or its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) in T5_FAMILY


class Fp32Linear(torch.nn.Linear):
    """A linear layer that computes in fp32 even inside an fp16/bf16 autocast region.

    Swapped in for a model's ``nn.Linear`` by :func:`apply_precision_policy`, sharing its parameters, so the
    state dict (and a saved model) is unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())

    @classmethod
    def sharing(cls, linear: torch.nn.Linear) -> Fp32Linear:
        """An ``Fp32Linear`` holding the very parameters (and mode) of ``linear``."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new


def apply_precision_policy(model, precision: str, *, allow_fp16_t5: bool = False) -> dict:
    """Check ``precision`` against the model family; returns what the run records about it.

    T5-family models in fp16 are refused (with the alternatives) unless ``allow_fp16_t5``; then the modules the
    model lists in ``_keep_in_fp32_modules`` (T5: the feed-forward output projections ``wo``) compute in fp32.

    Returns:
        ``{"precision": ..., "fp32_modules": [module names kept in fp32]}``.
    """
    info = {"precision": precision, "fp32_modules": []}
    if precision != "fp16" or not is_t5_family(model):
        return info
    mt = model.config.model_type
    if not allow_fp16_t5:
        raise ConfigError(
            f"fp16 is refused for {mt} models: the T5 family was pretrained in bf16 and its feed-forward "
            "activations overflow fp16's range (max 65504), which turns the loss into inf/NaN. Use "
            "--precision bf16 (Ampere or newer GPUs, recent CPUs) or --precision fp32. To keep fp16 anyway, "
            "pass --allow-fp16-t5: the feed-forward outputs (wo) are then computed in fp32."
        )
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ("wo",))
    for name, module in list(model.named_modules()):
        if name.split(".")[-1] in keep and isinstance(module, torch.nn.Linear):
            if not isinstance(module, Fp32Linear):
                model.set_submodule(name, Fp32Linear.sharing(module))
            info["fp32_modules"].append(name)
    log.warning(
        "fp16 on a %s model (--allow-fp16-t5): %d modules kept in fp32", mt, len(info["fp32_modules"])
    )
    return info
