"""Parsing what makepkg printed (texts as makepkg 7.0 prints them), and what follows from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.build.srcinfo import not_provided, parse, problems, read_output
from orchestrator.errors import PkgbuildError

SPLIT = """\
pkgbase = demo-split
\tpkgver = 2.1
\tpkgrel = 3
\tepoch = 1
\tarch = x86_64
\tarch = aarch64
\tmakedepends = cmake>=3.20
\tdepends = openssl
\tsource = demo.service
\tsource_x86_64 = https://example.com/demo-linux-x86_64-2.1.tar.gz
\tsource_x86_64 = https://example.com/demo-linux-x86_64-2.1.tar.gz.sig
\tsha256sums = SKIP
\tsha256sums_x86_64 = SKIP
\tsha256sums_x86_64 = SKIP

pkgname = demo-a
\tdepends = demo-libs: the shared part

pkgname = demo-b
\tarch = any
"""


def test_a_split_package_as_makepkg_prints_it() -> None:
    info = parse(SPLIT)
    assert info.text == SPLIT
    assert (info.pkgbase, info.pkgnames, info.version) == (
        "demo-split",
        ("demo-a", "demo-b"),
        "1:2.1-3",
    )
    assert info.sources() == (
        "demo.service",
        "https://example.com/demo-linux-x86_64-2.1.tar.gz",
        "https://example.com/demo-linux-x86_64-2.1.tar.gz.sig",
    )
    assert info.sources("aarch64") == ("demo.service",)
    assert info.local_sources() == ("demo.service",)
    assert info.needs() == ("openssl", "cmake", "demo-libs")
    assert info.package_files() == (
        "demo-a-1:2.1-3-x86_64.pkg.tar",
        "demo-b-1:2.1-3-any.pkg.tar",
    )


def test_problems_makepkg_would_stop_at_later(tmp_path: Path) -> None:
    info = parse(SPLIT)
    assert problems(info, tmp_path) == ["local source 'demo.service' is not in the upload"]
    (tmp_path / "demo.service").write_text("[Unit]\n")
    assert problems(info, tmp_path) == []
    uneven = parse(SPLIT.replace("\tsha256sums_x86_64 = SKIP\n", "", 1))
    assert problems(uneven, tmp_path) == [
        "sha256sums_x86_64 has 1 entries for 2 source_x86_64 entries"
    ]
    arm_only = parse("pkgbase = a\n\tpkgver = 1\n\tpkgrel = 1\n\tarch = aarch64\n\npkgname = a\n")
    assert problems(arm_only, tmp_path) == ["arch is (aarch64): the build images are x86_64"]


def test_renamed_and_remote_sources_are_not_local(tmp_path: Path) -> None:
    info = parse(
        "pkgbase = a\n\tpkgver = 1\n\tpkgrel = 1\n\tarch = any\n"
        "\tsource = a-1.tar.gz::https://example.com/a.tar.gz\n"
        "\tsource = git+https://example.com/a.git#tag=v1\n"
        "\tsource = renamed.patch::local.patch\n"
        "\tsource = ../escape\n\npkgname = a\n"
    )
    # As makepkg reads them: the name before the first '::', its last component (found by a
    # hostile review: the text after '::' was checked, and makepkg then failed the build).
    assert info.local_sources() == ("renamed.patch", "escape")
    (tmp_path / "local.patch").write_text("")
    assert problems(info, tmp_path) == [
        "local source 'renamed.patch' is not in the upload",
        "local source 'escape' is not in the upload",
    ]
    (tmp_path / "renamed.patch").write_text("")
    (tmp_path / "escape").write_text("")
    assert problems(info, tmp_path) == []


def test_a_second_pkgbase_printed_by_the_top_level_is_refused() -> None:
    with pytest.raises(PkgbuildError, match="second pkgbase"):
        parse(SPLIT + "pkgbase = evil\n\tsource = /etc/passwd\n")


def test_what_the_image_does_not_provide_is_named() -> None:
    info = parse(SPLIT)
    assert not_provided(info, {"cmake", "openssl"}) == ["demo-libs"]
    assert not_provided(info, {"cmake", "openssl", "demo-libs"}) == []


@pytest.mark.parametrize("text", ["", "==> ERROR: not srcinfo\n", "\tpkgver = 1\n"])
def test_what_is_not_a_srcinfo_is_refused(text: str) -> None:
    with pytest.raises(PkgbuildError):
        parse(text)


async def test_makepkgs_answer_is_remembered_for_the_same_input(tmp_path: Path) -> None:
    from orchestrator import Settings
    from orchestrator.backend.fake import FakeBackend
    from orchestrator.build.inspector import Inspector

    backend = FakeBackend()
    inspector = Inspector(backend, Settings(data_dir=tmp_path / "data"), {})

    def readings() -> int:
        return sum("makepkg --printsrcinfo" in " ".join(cmd) for _, cmd, _ in backend.execs)

    (tmp_path / "PKGBUILD").write_text("pkgname=a\npkgver=1\npkgrel=1\npackage() { :; }\n")
    first = await inspector.read(tmp_path, "img", {})
    second = await inspector.read(tmp_path, "img", {})
    assert first == second and readings() == 1
    (tmp_path / "PKGBUILD").write_text("pkgname=a\npkgver=2\npkgrel=1\npackage() { :; }\n")
    assert (await inspector.read(tmp_path, "img", {})).version == "2-1"
    assert readings() == 2
    await inspector.close()


# What rbee's worker PKGBUILDs print at their top level (`echo "Detected platform: ..."`),
# makepkg prints before the .SRCINFO, and goes on.
def test_what_the_top_level_printed_before_the_srcinfo_is_kept_apart() -> None:
    printed = "Detected platform: linux-x86_64-cpu\nBuilding with features: cpu\n"
    info = read_output(printed + SPLIT, stderr="")
    assert info.text == SPLIT
    assert info.pkgnames == ("demo-a", "demo-b")
    assert info.printed == printed.strip()
    [warning] = info.warnings
    assert "Detected platform: linux-x86_64-cpu" in warning


def test_a_top_level_that_prints_srcinfo_lines_cannot_pass_for_makepkg() -> None:
    # makepkg prints the .SRCINFO after sourcing the PKGBUILD: the last pkgbase is its own.
    fake = "pkgbase = evil\n\tsource = https://evil.example/x\n\npkgname = evil\n"
    info = read_output(fake + SPLIT, stderr="")
    assert info.pkgbase == "demo-split"
    assert "https://evil.example/x" not in info.sources()
    assert "pkgbase = evil" in info.printed


def test_what_the_top_level_printed_on_stderr_is_a_warning_too() -> None:
    info = read_output(SPLIT, stderr="warning: no nvidia-smi here\n")
    assert info.printed == "warning: no nvidia-smi here"
    assert info.warnings and "no nvidia-smi here" in info.warnings[0]


def test_a_quiet_pkgbuild_has_no_warning() -> None:
    info = read_output(SPLIT, stderr="")
    assert (info.printed, info.warnings) == ("", ())


def test_a_megabyte_printed_at_the_top_level_is_cut_in_the_warning() -> None:
    info = read_output("x" * 2_000_000 + "\n" + SPLIT, stderr="")
    assert info.pkgbase == "demo-split"
    assert len(info.warnings[0]) < 4096


def test_output_with_no_srcinfo_is_refused_plainly() -> None:
    with pytest.raises(PkgbuildError, match="no pkgbase"):
        read_output("Detected platform: linux\n", stderr="")


def test_a_last_printed_line_without_a_newline_is_not_taken_for_the_srcinfo() -> None:
    info = read_output("Detected platform: lin" + SPLIT, stderr="")
    assert (info.text, info.printed) == (SPLIT, "Detected platform: lin")
