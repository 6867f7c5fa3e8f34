"""Build variants: which image a build runs in, whether it gets GPUs, and what is refused."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ..errors import VariantError, VariantRefused

if TYPE_CHECKING:  # the route table reads ``Variant`` where the service's settings are not loaded
    from ..settings import Settings


class Variant(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    METAL = "metal"


@dataclass(frozen=True, slots=True)
class VariantPlan:
    variant: Variant
    image: str
    gpus: bool
    warnings: tuple[str, ...] = ()


def parse_variant(name: str) -> Variant:
    try:
        return Variant(name.strip().lower())
    except ValueError:
        known = ", ".join(v.value for v in Variant)
        raise VariantError(f"unknown variant {name!r}; known variants: {known}") from None


def plan(name: str, settings: Settings, *, gpu_runtime: bool) -> VariantPlan:
    """Decide how to run ``name``; ``gpu_runtime`` says whether the daemon can hand out GPUs."""
    variant = parse_variant(name)
    if variant is Variant.METAL:
        raise VariantRefused(
            "metal",
            "Metal is Apple's GPU API and needs macOS; a Linux container cannot use it",
            "build the 'cpu' variant instead",
        )
    if variant is Variant.CPU:
        return VariantPlan(variant, settings.image_cpu, gpus=False)
    wants_gpu = settings.gpu == "on" or (settings.gpu == "auto" and gpu_runtime)
    warnings: tuple[str, ...] = ()
    if not wants_gpu:
        # CUDA code compiles without a GPU; only running it needs one.
        warnings = (
            "no NVIDIA container runtime on this host: the build runs with the CUDA toolkit "
            "but without a GPU, so CUDA programs cannot run here",
        )
    return VariantPlan(variant, settings.image_cuda, gpus=wants_gpu, warnings=warnings)
