"""What the CPU can do, asked once: does it run bf16 natively (AVX512-BF16 or AMX), or would bf16 be emulated?

Emulated bf16 is a trap: on an AVX2-only EPYC a ResNet-9 forward at 128x128 took 0.85 s in fp32 and 72.6 s under bf16
autocast (issue 13). So presets pick bf16 only where ``cpu_bf16()`` says it is native, and an explicit bf16 request
on another CPU gets one warning (``warn_if_emulated_bf16``).

``CYCLEGAN_CPU_BF16=0`` (or ``1``) overrides the detection: to try the fp32 path on a bf16 machine, or the reverse.
Tests replace ``detect_cpu_bf16`` itself.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)
ENV_OVERRIDE = "CYCLEGAN_CPU_BF16"
_warned: set[str] = set()


def cpu_capability() -> str:
    """torch's dispatch level (``AVX512``, ``AVX2``, ``DEFAULT``...): says nothing about bf16, hence ``cpu_bf16``."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "unknown"


def detect_cpu_bf16() -> tuple[bool, str]:
    """(native bf16?, why): torch's own probes where it has them, else the flags in /proc/cpuinfo."""
    probes = {name: getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")}
    if all(probes.values()):
        found = [name for name, probe in probes.items() if probe()]
        if found:
            return True, f"CPU has {' and '.join(found)} (torch.cpu probe)"
        return False, f"CPU has neither avx512_bf16 nor amx (torch.cpu probe; capability {cpu_capability()})"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False, "cannot tell (no torch probe, no /proc/cpuinfo): assuming no native bf16"
    found = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if found:
        return True, f"CPU has {' and '.join(found)} (/proc/cpuinfo)"
    return False, f"CPU has neither avx512_bf16 nor amx_bf16 (/proc/cpuinfo; capability {cpu_capability()})"


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[bool, str]:
    return detect_cpu_bf16()


def cpu_bf16() -> tuple[bool, str]:
    """(native bf16?, reason), detected once per process; ``CYCLEGAN_CPU_BF16=0|1`` overrides it."""
    forced = os.environ.get(ENV_OVERRIDE)
    if forced in ("0", "1"):
        return forced == "1", f"{ENV_OVERRIDE}={forced}"
    return _cached()


def describe_cpu() -> str:
    """One line for benchmark headers: torch's capability and whether bf16 is native."""
    native, why = cpu_bf16()
    return f"torch CPU capability {cpu_capability()}; bf16 {'native' if native else 'EMULATED (slow)'}: {why}"


def _is_cpu(accelerator: str | None) -> bool:
    accel = str(accelerator or "auto").lower()
    if accel == "cpu":
        return True
    if accel == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return False


def bf16_where_native(accelerator: str | None = "auto", fallback: str = "32-true") -> str:
    """Lightning precision for a bf16 preset: ``bf16-mixed`` on accelerators and on CPUs with native bf16,
    ``fallback`` (fp32) on other CPUs. The choice and its reason are logged once."""
    if not _is_cpu(accelerator):
        return "bf16-mixed"
    native, why = cpu_bf16()
    choice = "bf16-mixed" if native else fallback
    _once(f"preset:{choice}", f"bf16 preset resolved to precision {choice}: {why}", logging.INFO)
    return choice


def warn_if_emulated_bf16(precision: object, device_type: str) -> bool:
    """One warning per process when bf16 is asked for explicitly on a CPU that would emulate it; True if so."""
    if device_type != "cpu" or "bf16" not in str(precision):
        return False
    native, why = cpu_bf16()
    if native:
        return False
    _once(
        "emulated-bf16",
        f"precision {precision} on this CPU is EMULATED, not native ({why}): expect it to run many times slower "
        "than fp32 (86x measured for a ResNet-9 forward). Use fp32 (32-true / precision=32) unless you are testing.",
        logging.WARNING,
    )
    return True


def _once(key: str, message: str, level: int) -> None:
    if key not in _warned:
        _warned.add(key)
        log.log(level, "%s", message)
