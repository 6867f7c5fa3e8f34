"""A package's ``.PKGINFO``, checked before ``repo-add`` reads it.

The build made the package, so its ``.PKGINFO`` is hostile, and repo-add trusts it: it
``declare``s each line's key as a shell variable (a key with an array subscript, ``x[$(cmd)]``,
runs ``cmd`` as this service, beside the repository's secret key; a key like ``tmpdir`` moves
where it writes) and makes a folder named ``$pkgname-$pkgver`` (``..`` in it writes outside its
own; a leading ``-`` is an option to mkdir, and the database comes out empty). So a package is
published only if every line is a comment or one of makepkg's own keys, and its name and
version are the ones its file name says (which ``repository._PACKAGE`` keeps plain).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..errors import RepoError
from ..timeouts import REPO_TOOL_TIMEOUT_S

# What makepkg's write_pkginfo writes (pacman 6 and 7).
_KEYS = (
    b"pkgname|pkgbase|pkgver|pkgdesc|url|builddate|packager|size|arch|license|replaces|group"
    b"|conflict|provides|backup|depend|optdepend|makedepend|checkdepend|xdata"
)
_LINE = re.compile(rb"(?P<key>" + _KEYS + rb") = (?P<value>[^\x00]*)")


def check_pkginfo(package: Path, name: str, version: str) -> None:
    """``RepoError`` unless ``package``'s ``.PKGINFO`` is safe for repo-add and names
    ``name`` at ``version`` (pkgver-pkgrel) alone."""
    try:
        # The very command repo-add reads it with, so both see the same bytes.
        done = subprocess.run(
            ["bsdtar", "-xOqf", str(package), ".PKGINFO"],
            capture_output=True,
            timeout=REPO_TOOL_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepoError(f"bsdtar could not run: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        raise RepoError(f"{package.name} has no .PKGINFO to read")
    found: dict[bytes, list[bytes]] = {}
    for line in done.stdout.removesuffix(b"\n").split(b"\n"):
        if line.startswith(b"#"):
            continue
        matched = _LINE.fullmatch(line)
        if matched is None:
            raise RepoError(f"{package.name}: its .PKGINFO has a line makepkg never writes")
        found.setdefault(matched["key"], []).append(matched["value"])
    said = {key: found.get(key, []) for key in (b"pkgname", b"pkgver")}
    if said != {b"pkgname": [name.encode()], b"pkgver": [version.encode()]}:
        raise RepoError(
            f"{package.name}: its .PKGINFO names another package or version than its file"
        )
