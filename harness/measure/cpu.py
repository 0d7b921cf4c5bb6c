"""Which CPU this is: vendor, family, model, stepping, microcode, the ISA extensions that
change kernels, and the generation they name.

A virtual machine often shows a bare brand (``AMD EPYC``) for every generation; the
family and model numbers do not lie, and two EPYC generations differ by 20-30% on the
same cell.  The hardware key (``env.hardware_key``) therefore carries the generation (from
the table below; ``f25m17`` where the table does not know it) and the widest vector ISA the
kernels may use, so that a baseline is judged only on the generation that recorded it.
"""

from __future__ import annotations

from typing import Any

CPUINFO = "/proc/cpuinfo"

# Flags that choose different kernels in oneDNN / ATen: recorded, and their widest tier keyed.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve", "sve2", "bf16", "i8mm")
# widest first: the first whose flags are all present names the tier
ISA_TIERS = (("amx", ("amx_tile", "amx_bf16")), ("avx512bf16", ("avx512f", "avx512_bf16")), ("avx512", ("avx512f",)),
             ("avx2", ("avx2", "fma")), ("sve2", ("sve2",)), ("sve", ("sve",)), ("neon", ("asimd",)))

# (vendor, family) -> [(first model, last model, generation)], from the vendors' model numbers
GENERATIONS: dict[tuple[str, int], list[tuple[int, int, str]]] = {
    ("AuthenticAMD", 0x17): [(0x00, 0x2F, "zen1"), (0x30, 0xFF, "zen2")],
    ("AuthenticAMD", 0x19): [(0x00, 0x0F, "zen3"), (0x10, 0x1F, "zen4"), (0x20, 0x5F, "zen3"), (0x60, 0xAF, "zen4")],
    ("AuthenticAMD", 0x1A): [(0x00, 0xFF, "zen5")],
    ("GenuineIntel", 6): [
        (0x3F, 0x3F, "haswell"), (0x4F, 0x4F, "broadwell"), (0x56, 0x56, "broadwell"), (0x55, 0x55, "skylake-sp"),
        (0x6A, 0x6A, "icelake-sp"), (0x6C, 0x6C, "icelake-sp"), (0x8F, 0x8F, "sapphirerapids"),
        (0xCF, 0xCF, "emeraldrapids"), (0xAD, 0xAE, "graniterapids"), (0xAF, 0xAF, "sierraforest"),
        (0x97, 0x9A, "alderlake"), (0xB7, 0xBF, "raptorlake"),
    ],
}
# Intel reuses model 0x55 for three generations; the stepping tells them apart.
INTEL_0x55_STEPPINGS = ((0, 4, "skylake-sp"), (5, 7, "cascadelake"), (10, 11, "cooperlake"))
# Arm: (implementer, part) -> core
ARM_PARTS = {(0x41, 0xD0C): "neoverse-n1", (0x41, 0xD40): "neoverse-v1", (0x41, 0xD49): "neoverse-n2",
             (0x41, 0xD4F): "neoverse-v2", (0x41, 0xD8E): "neoverse-n3", (0x41, 0xD84): "neoverse-v3",
             (0xC0, 0xAC3): "ampere-one"}


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's fields (every core of a machine shows the same model)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields.get("flags") or fields.get("Features"):
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _int(value: str | None) -> int | None:
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


def generation(vendor: str | None, family: int | None, model: int | None, stepping: int | None) -> str | None:
    if vendor == "GenuineIntel" and family == 6 and model == 0x55 and stepping is not None:
        return next((name for lo, hi, name in INTEL_0x55_STEPPINGS if lo <= stepping <= hi), "skylake-sp")
    for lo, hi, name in GENERATIONS.get((vendor or "", family if family is not None else -1), []):
        if model is not None and lo <= model <= hi:
            return name
    return None


def identity(text: str | None = None) -> dict[str, Any]:
    """The CPU's identity from ``/proc/cpuinfo`` (or ``text``, its contents); empty where
    there is none (not Linux)."""
    if text is None:
        try:
            with open(CPUINFO, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return {}
    fields = parse_cpuinfo(text)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vendor = fields.get("vendor_id")
    family, model, stepping = _int(fields.get("cpu family")), _int(fields.get("model")), _int(fields.get("stepping"))
    gen = generation(vendor, family, model, stepping)
    implementer, part = _int(fields.get("CPU implementer")), _int(fields.get("CPU part"))
    if implementer is not None and part is not None:  # Arm: no vendor_id or family
        vendor, family, model = f"arm-{implementer:#x}", None, part
        gen = ARM_PARTS.get((implementer, part))
        stepping = _int(fields.get("CPU variant"))
    tier = next((name for name, need in ISA_TIERS if all(f in flags for f in need)), None)
    return {
        "vendor": vendor, "family": family, "model": model, "stepping": stepping,
        "microcode": fields.get("microcode"), "model_name": fields.get("model name"),
        "generation": gen or (f"f{family}m{model}" if family is not None else (f"part{model:#x}" if model else None)),
        "generation_known": gen is not None, "isa": sorted(f for f in KERNEL_FLAGS if f in flags), "isa_tier": tier,
    }


def key_suffix(cpu: dict[str, Any]) -> str:
    """``zen3-avx2``: the generation and the widest vector ISA, for the hardware key."""
    return "-".join(str(part) for part in (cpu.get("generation"), cpu.get("isa_tier")) if part)
