"""The download name of a package the build named: no quote, separator or Latin-1 misreading
may change what a client saves it as (the build controls the file name, within a suffix)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from yarl import URL

from orchestrator.api.artifacts import content_disposition
from orchestrator.api.wire import artifact_url


def saved_names(header: str) -> tuple[str | None, str | None]:
    """What RFC 6266's grammar reads as ``filename`` (the first quoted-string) and as
    ``filename*`` (decoded)."""
    plain = re.search(r'(?:^|;)\s*filename="((?:[^"\\]|\\.)*)"\s*(?:;|$)', header)
    exact = re.search(r"(?:^|;)\s*filename\*=UTF-8''([!#$&+.^_`|~0-9A-Za-z%-]*)\s*(?:;|$)", header)
    return (plain.group(1) if plain else None, unquote(exact.group(1)) if exact else None)


@pytest.mark.parametrize(
    "name",
    [
        "hello-1.0-1-x86_64.pkg.tar.zst",
        'a";.pkg.tar.zst',
        "a; filename=evil.pkg.tar.zst",
        "caf\u00e9-1-1-any.pkg.tar.zst",
        "a\\..\\b.pkg.tar.zst",
        "%2e%2e.pkg.tar.zst",
    ],
)
def test_the_exact_name_survives_and_the_plain_one_is_plain(name: str) -> None:
    header = content_disposition(name)
    assert header.isascii()
    plain, exact = saved_names(header)
    assert exact == name
    assert plain is not None and plain.endswith(".pkg.tar.zst")
    assert all(c.isascii() and (c.isalnum() or c in "._+@-") for c in plain), plain


@pytest.mark.parametrize(
    "name",
    [
        "hello-1.0-1-x86_64.pkg.tar.zst",
        "a#b.pkg.tar.zst",
        "a?x=1.pkg.tar",
        "100%25.pkg.tar",
        "a b.pkg.tar",
    ],
)
def test_the_download_url_names_the_package_whatever_its_characters(name: str) -> None:
    url = URL(artifact_url("0123abcd", name))
    assert not url.query_string and not url.fragment
    assert url.parts == ("/", "v1", "jobs", "0123abcd", "artifacts", name)
