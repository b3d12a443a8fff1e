"""Presets that know the CPU: bf16 only where it is native, fp32 where it would be emulated; one warning when bf16 is
forced on a CPU without it. The CPU is simulated by replacing ``hardware.detect_cpu_bf16``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from cyclegan_lightning import hardware
from cyclegan_lightning.inference import LoadedGenerators, Translator
from cyclegan_lightning.networks import ResnetGenerator


@pytest.mark.parametrize("native, expected", [(False, "32-true"), (True, "bf16-mixed")])
@pytest.mark.parametrize("preset", ["perf=cpu", "trainer=bf16"])
def test_bf16_presets_follow_the_cpu(train_cfg, simulate_cpu, caplog, preset, native, expected):
    simulate_cpu(native)
    with caplog.at_level(logging.INFO, logger=hardware.__name__):
        assert train_cfg(preset).trainer.precision == expected
    assert f"precision {expected}: simulated CPU" in caplog.text  # the choice and its reason are logged


def test_env_override_forces_the_answer(simulate_cpu, monkeypatch):
    simulate_cpu(True)
    monkeypatch.setenv(hardware.ENV_OVERRIDE, "0")
    assert hardware.bf16_where_native("cpu") == "32-true"
    assert hardware.bf16_where_native("gpu") == "bf16-mixed"  # GPUs are not the CPU's business


def test_detection_reads_this_machine():
    native, why = hardware.detect_cpu_bf16()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert native, why
    elif "flags" in flags:
        assert not native, why


def _translator(precision: str) -> Translator:
    gen = ResnetGenerator(3, 3, ngf=4, n_blocks=1).eval()
    return Translator(
        LoadedGenerators({"a2b": gen}, {"a": 3, "b": 3}, "test", Path("x.pth")),
        device="cpu",
        precision=precision,
        backend="eager",
    )


def test_forced_bf16_on_emulating_cpu_warns_once_and_runs(simulate_cpu, caplog):
    simulate_cpu(False)

    def warnings() -> int:
        return sum("EMULATED" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger=hardware.__name__):
        translator = _translator("bf16")
        assert warnings() == 1  # translator.precision=bf16
        _translator("bf16")
        assert hardware.warn_if_emulated_bf16("bf16-mixed", "cpu")  # the training path, same process
        assert warnings() == 1
        out = translator.translate_tensor(torch.rand(3, 8, 8))
    assert out.shape == (3, 8, 8)  # it proceeds


def test_no_warning_where_bf16_is_native_or_not_asked(simulate_cpu, caplog):
    simulate_cpu(True)
    with caplog.at_level(logging.WARNING, logger=hardware.__name__):
        _translator("bf16")
        simulate_cpu(False)
        _translator("32")
        assert not hardware.warn_if_emulated_bf16("bf16-mixed", "cuda")
    assert "EMULATED" not in caplog.text
