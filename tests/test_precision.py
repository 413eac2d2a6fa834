"""Choosing a precision for the hardware: bf16 only where it is native, an explicit emulated bf16 warned about."""

from __future__ import annotations

import logging

import pytest
import torch

from xlqa import precision
from xlqa.errors import ConfigError
from xlqa.precision import autocast, choose_precision, cpu_has_native_bf16


def test_auto_on_a_cpu_picks_bf16_exactly_where_this_cpu_computes_it_natively():
    assert choose_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert choose_precision("fp32", "cpu") == "fp32"


def test_an_unknown_precision_names_the_flag_and_the_choices():
    with pytest.raises(ConfigError, match=r"--precision must be one of auto, bf16, fp32, fp16, got 'float8'"):
        choose_precision("float8", "cpu")


@pytest.mark.parametrize("native", [False, True])
def test_explicit_bf16_is_kept_and_warned_about_once_where_the_cpu_emulates_it(monkeypatch, caplog, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    precision._warn_emulated_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="xlqa.precision"):
        assert choose_precision("bf16", "cpu") == "bf16"
        assert choose_precision("bf16", "cpu") == "bf16"
        assert choose_precision("auto", "cpu") == ("bf16" if native else "fp32")
    warnings = [r.getMessage() for r in caplog.records if r.name == "xlqa.precision"]
    if native:
        assert warnings == []
    else:
        assert (
            len(warnings) == 1 and "emulated" in warnings[0] and "--precision auto picks fp32" in warnings[0]
        )
    precision._warn_emulated_bf16.cache_clear()


def test_autocast_computes_in_the_chosen_dtype_and_fp32_is_left_alone():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
