from __future__ import annotations

import pytest

from orchestrator import Settings, Variant, VariantError, VariantRefused
from orchestrator.build.variants import plan


def test_cpu_is_plain() -> None:
    result = plan("cpu", Settings(), gpu_runtime=True)
    assert (result.variant, result.gpus, result.warnings) == (Variant.CPU, False, ())


@pytest.mark.parametrize(
    ("setting", "runtime", "gpus"),
    [("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False)],
)
def test_cuda_requests_gpus_as_configured(setting: str, runtime: bool, gpus: bool) -> None:
    result = plan("CUDA", Settings(gpu=setting), gpu_runtime=runtime)
    assert result.image == Settings().image_cuda
    assert result.gpus is gpus
    assert bool(result.warnings) is not gpus


def test_metal_is_refused_with_the_reason_and_a_way_out() -> None:
    with pytest.raises(VariantRefused) as refused:
        plan("metal", Settings(), gpu_runtime=False)
    assert "macOS" in refused.value.reason
    assert "'cpu'" in str(refused.value)


def test_unknown_variant_lists_the_known_ones() -> None:
    with pytest.raises(VariantError, match="cpu, cuda, metal"):
        plan("rocm", Settings(), gpu_runtime=False)


def test_settings_come_from_the_environment_when_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_BUILD_NETWORK", "none")
    monkeypatch.setenv("ORCHESTRATOR_KILL_GRACE_S", "2.5")
    settings = Settings()
    assert (settings.build_network, settings.kill_grace_s) == ("none", 2.5)
