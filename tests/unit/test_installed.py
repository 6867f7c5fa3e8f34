"""Installed workers: the switch is atomic, and a stopped or failed install changes nothing."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator.catalog.installed import WorkerStore
from orchestrator.errors import InstallError, InvalidInput


def package(tmp_path: Path, version: str, *, binary: str = "w") -> Path:
    script = f"#!/bin/sh\necho w {version}\n".encode()
    path = tmp_path / f"w-{version}.pkg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"usr/bin/{binary}")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return path


def run(path: Path) -> str:
    return subprocess.run([path], capture_output=True, text=True, check=True).stdout.strip()


def test_install_then_upgrade_switches_and_prunes(tmp_path: Path) -> None:
    store = WorkerStore(tmp_path / "workers")
    first = store.install("w", "1.0", "w", package(tmp_path, "1.0"), "job1")
    assert first is not None
    assert run(first.path) == "w 1.0"
    second = store.install("w", "2.0", "w", package(tmp_path, "2.0"), "job2")
    assert second is not None
    assert run(second.path) == "w 2.0"
    assert store.get("w") == second
    assert sorted(p.name for p in (tmp_path / "workers" / "w").iterdir()) == sorted(
        ["current", second.path.parent.name]
    )


def test_a_stopped_install_changes_nothing(tmp_path: Path) -> None:
    store = WorkerStore(tmp_path / "workers")
    first = store.install("w", "1.0", "w", package(tmp_path, "1.0"), "job1")
    assert store.install("w", "2.0", "w", package(tmp_path, "2.0"), "job2", lambda: True) is None
    assert store.get("w") == first
    assert sorted(p.name for p in (tmp_path / "workers" / "w").iterdir()) == sorted(
        ["current", first.path.parent.name]  # type: ignore[union-attr]
    )


def test_a_package_without_the_binary_fails_and_leaves_nothing(tmp_path: Path) -> None:
    store = WorkerStore(tmp_path / "workers")
    first = store.install("w", "1.0", "w", package(tmp_path, "1.0"), "job1")
    with pytest.raises(InstallError, match="usr/bin/w"):
        store.install("w", "2.0", "w", package(tmp_path, "2.0", binary="other"), "job2")
    assert store.get("w") == first
    assert len(list((tmp_path / "workers" / "w").iterdir())) == 2


def test_remove_and_bad_ids(tmp_path: Path) -> None:
    store = WorkerStore(tmp_path / "workers")
    store.install("w", "1.0", "w", package(tmp_path, "1.0"), None)
    assert [w.id for w in store.list()] == ["w"]
    assert store.remove("w")
    assert not store.remove("w")
    assert store.list() == []
    with pytest.raises(InvalidInput, match="not a worker id"):
        store.get("../etc")
