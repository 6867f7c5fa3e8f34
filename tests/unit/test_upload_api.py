"""Hostile uploads over real HTTP: a 400 that names the member, and nothing written anywhere.

The whole app runs on the fake backend behind aiohttp's TestServer on 127.0.0.1, with its data
dir on the real filesystem, so an escape would land on another job's files exactly as it would in
the service.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend

from ..conftest import PKGBUILDS
from .test_archive import without_extraction_filters

VICTIM = Path("artifacts") / "0f" / "demo-1.0-1-x86_64.pkg.tar.gz"


@pytest.fixture
async def client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    # The service image's Python (Debian bookworm's 3.11.2) has no tarfile extraction filters.
    without_extraction_filters(monkeypatch)
    app = create_app(settings, backend=FakeBackend())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def upload(*members: tuple[str, str, bytes | str]) -> bytes:
    """A tar.gz of ``(kind, name, data)``: kind ``file`` (data = bytes), ``dir`` or ``symlink``
    (data = target). A real build dir goes first, so only the members given can fail."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted((PKGBUILDS / "hello-c").iterdir()):
            tar.add(path, arcname=path.name)
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.SYMTYPE
            info.linkname = str(data)
            tar.addfile(info)
    return out.getvalue()


async def post(client: TestClient, body: bytes) -> tuple[int, dict[str, object]]:
    response = await client.post(
        "/v1/builds", data=body, headers={"Content-Type": "application/gzip"}
    )
    return response.status, dict(await response.json())


def everything_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


async def test_the_symlink_chain_from_the_issue_is_a_400_and_writes_nothing(
    client: TestClient, settings: Settings
) -> None:
    victim = settings.data_dir / VICTIM
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"the real package")
    # dest is data/work/<job>: followed, l2 is data/work and l3 the data dir, though each link's
    # target stays inside the folder by its text.
    body = upload(
        ("dir", "sub", ""),
        ("symlink", "l1", "sub/.."),
        ("symlink", "l2", "l1/.."),
        ("symlink", "l3", "l2/.."),
        ("file", f"l3/{VICTIM}", b"tampered"),
        ("file", "l3/planted", b"planted"),
    )
    before = everything_under(settings.data_dir)

    status, answer = await post(client, body)

    assert status == 400, answer
    assert answer["error"] == "bad_archive"
    # The first member refused: the first one written through a link.
    assert f"'l3/{VICTIM}'" in str(answer["message"]), answer
    assert victim.read_bytes() == b"the real package"
    assert not (settings.data_dir / "planted").exists()
    assert everything_under(settings.work_dir) == []
    # The work dir itself may now exist (it is the service's own); nothing else is new.
    assert [p for p in everything_under(settings.data_dir) if p != "work"] == before
    jobs = await (await client.get("/v1/jobs")).json()
    assert jobs["total"] == 0


@pytest.mark.parametrize(
    ("members", "named"),
    [
        # Issue item 9: both answered 500 (NotADirectoryError, ENAMETOOLONG).
        ([("file", "a", b"1"), ("file", "a/b", b"2")], "'a/b'"),
        ([("file", "x" * 300, b"1")], "longer than 255 bytes"),
    ],
    ids=["file-then-below-it", "300-char-component"],
)
async def test_unwritable_names_are_a_400(
    client: TestClient,
    settings: Settings,
    members: list[tuple[str, str, bytes | str]],
    named: str,
) -> None:
    status, answer = await post(client, upload(*members))

    assert status == 400, answer
    assert answer["error"] == "bad_archive"
    assert named in str(answer["message"]), answer
    assert everything_under(settings.work_dir) == []


async def test_a_build_dir_with_links_inside_it_is_accepted(
    client: TestClient, settings: Settings
) -> None:
    body = upload(
        ("file", "src/main.c", b"int main(void) { return 0; }\n"),
        ("symlink", "src/alias.c", "main.c"),
        ("symlink", "sources", "src"),
    )

    status, answer = await post(client, body)

    assert status == 201, answer
    assert answer["pkgname"] == "hello-c"
