"""The repository's signing key: GnuPG from the host, in its own home under the data directory.

The key is made on first start (no passphrase: the service signs unattended) unless one is
given as a file; the home is 0700 and its files 0600. Nothing here logs or returns the secret
part: only the fingerprint and the ASCII-armored public key leave this module.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from ..errors import RepoError
from ..timeouts import GPG_TIMEOUT_S

KEY_USER_ID = "orchestrator repository <repository@orchestrator.invalid>"


class Signer:
    """Signs files with one secret key of ``home``, named by its fingerprint."""

    def __init__(self, home: Path, fingerprint: str) -> None:
        self.home = home
        self.fingerprint = fingerprint

    @classmethod
    def open(cls, home: Path, key_file: Path | None) -> Signer:
        """The given key (imported into ``home``), else the home's own, made if it has none."""
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        if key_file is not None:
            _gpg(home, "--import", str(key_file))
            fingerprint = _first_secret(_gpg(home, "--with-colons", "--show-keys", str(key_file)))
        else:
            fingerprint = _first_secret(_gpg(home, "--with-colons", "--list-secret-keys"))
            if fingerprint is None:
                _gpg(
                    home,
                    "--passphrase",
                    "",
                    "--quick-gen-key",
                    KEY_USER_ID,
                    "ed25519",
                    "sign",
                    "never",
                )
                fingerprint = _first_secret(_gpg(home, "--with-colons", "--list-secret-keys"))
        if fingerprint is None:
            raise RepoError("the repository's key file holds no secret key")
        _private(home)
        return cls(home, fingerprint)

    def public_key(self) -> str:
        """The key's public part, ASCII-armored (what ``pacman-key --add`` takes)."""
        return _gpg(self.home, "--armor", "--export", self.fingerprint)

    def sign(self, path: Path, signature: Path) -> None:
        """A detached binary signature of ``path``, as ``makepkg --sign`` makes."""
        _gpg(
            self.home,
            "--passphrase",
            "",
            "--local-user",
            self.fingerprint,
            "--no-armor",
            "--output",
            str(signature),
            "--detach-sign",
            str(path),
        )

    def sign_bytes(self, data: bytes) -> bytes:
        """A detached binary signature of ``data`` (a DSSE envelope's signed bytes)."""
        with tempfile.TemporaryDirectory(dir=self.home) as folder:
            path = Path(folder) / "data"
            path.write_bytes(data)
            self.sign(path, path.with_name("data.sig"))
            return path.with_name("data.sig").read_bytes()

    def verify(self, path: Path, signature: Path) -> None:
        """``RepoError`` unless ``signature`` is this key's good signature of ``path``."""
        if not signature.is_file():
            raise RepoError(f"{path.name} was not signed")
        status = _gpg(self.home, "--status-fd", "1", "--verify", str(signature), str(path))
        if f"VALIDSIG {self.fingerprint}" not in status:
            raise RepoError(f"{path.name}: its signature is not the repository key's")

    @property
    def env(self) -> dict[str, str]:
        """The environment for a tool that runs gpg itself (``repo-add --sign``)."""
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def close(self) -> None:
        """End the agent gpg started for this home (it would outlive the service)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
            timeout=GPG_TIMEOUT_S,
        )


def _gpg(home: Path, *args: str) -> str:
    command = ["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback"]
    try:
        done = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=GPG_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepoError(f"gpg could not run: {exc}") from exc
    if done.returncode != 0:
        # gpg's stderr names keys and files, never secret material.
        raise RepoError(f"gpg failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _first_secret(colons: str) -> str | None:
    """The fingerprint of the first secret key gpg listed (``sec`` then its ``fpr``)."""
    after_sec = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "sec":
            after_sec = True
        elif fields[0] == "fpr" and after_sec:
            return fields[9]
    return None


def _private(home: Path) -> None:
    for folder, dirs, files in os.walk(home):
        for name in dirs:
            (Path(folder) / name).chmod(0o700)
        for name in files:
            path = Path(folder) / name
            if not path.is_socket():
                path.chmod(0o600)
