"""Reading a tar stream with the limits tarfile lacks (used by ``archive``).

tarfile trusts what a header claims: how long a pax record is, how many digits a number has,
where the next member starts. Here every read goes through ``TarStream``, which caps header
reads, the decompressed size and the cost of tarfile's own digit searches, and turns whatever
a hostile or broken stream makes tarfile raise into an ``ArchiveError`` (the API's 400).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, Protocol, Self

from ..errors import ArchiveError, ArchiveTooLarge

# tarfile reads a pax or GNU long-name header in one piece, as long as it claims to be; a real
# one holds a path or two.
_MAX_HEADER_READ_BYTES = 64 * 1024
# Before 3.11.10 tarfile searches pax headers with regexes quadratic in a run of digits
# (CVE-2024-6232); a run of L digits costs it about L*L steps. A real archive spends ~2000 a
# member (octal fields, timestamps); this is ~0.3 s of regex at worst.
_DIGIT_BUDGET = 1 << 29
_DIGITS = re.compile(rb"\d+")
# Headers, pax records and padding per member, for the cap on the decompressed stream.
_OVERHEAD_BYTES_PER_MEMBER = 2048
READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    zlib.error,
    lzma.LZMAError,
)


class TarStream:
    """The (decompressed) tar stream as tarfile reads it, with the limits tarfile lacks."""

    def __init__(self, raw: _Raw, *, limit_bytes: int | None, max_bytes: int) -> None:
        self._raw = raw
        self._limit_bytes = limit_bytes
        self._max_bytes = max_bytes
        self._pos = raw.tell()
        self._digit_cost = 0
        self.bulk = False  # set while we copy member data: big reads are ours, not headers

    def read(self, size: int = -1) -> bytes:
        if size < 0 or (size > _MAX_HEADER_READ_BYTES and not self.bulk):
            raise ArchiveError(f"archive has a header that claims {size} bytes")
        self._check_limit(self._pos + size)
        try:
            data = self._raw.read(size)
        except READ_ERRORS as exc:
            raise ArchiveError(f"not a readable tar archive: {exc}") from exc
        self._pos += len(data)
        if not self.bulk:
            self._digit_cost += sum(len(run) ** 2 for run in _DIGITS.findall(data))
            if self._digit_cost > _DIGIT_BUDGET:
                raise ArchiveError("archive has headers with implausibly long runs of digits")
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos}.get(whence)
        if target is None:
            raise ArchiveError("archive reader cannot seek from the end")  # tarfile never does
        self._check_limit(target + offset)
        try:
            self._pos = self._raw.seek(target + offset)
        except READ_ERRORS as exc:
            raise ArchiveError(f"not a readable tar archive: {exc}") from exc
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _check_limit(self, end: int) -> None:
        # Only a decompressed stream needs it: there every byte skipped is a byte inflated.
        if self._limit_bytes is not None and end > self._limit_bytes:
            raise ArchiveTooLarge(
                f"archive unpacks to more than {self._max_bytes} bytes", limit_bytes=self._max_bytes
            )


class _Raw(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int: ...
    def tell(self) -> int: ...


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile takes a header it cannot parse, anywhere but first, as the archive's end: every
    member after it would be dropped without a word. Here that is an error."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tar)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:  # type: ignore[attr-defined]
            if tar.offset == 0:
                raise  # tarfile's own "not a tar" answer, as before
            # Not a tarfile.HeaderError, so its next() does not swallow it.
            raise ArchiveError(
                f"not a readable tar archive: a bad header at byte {tar.offset} ({exc})"
            ) from exc


@contextmanager
def open_tar(
    fileobj: IO[bytes], *, max_bytes: int, max_members: int
) -> Iterator[tuple[tarfile.TarFile, TarStream]]:
    """A tar (plain, gzip, xz or bzip2) opened for reading through a ``TarStream``."""
    start = fileobj.tell()
    magic = fileobj.read(6)
    fileobj.seek(start)
    with ExitStack() as stack:
        raw: _Raw = fileobj
        if magic.startswith(b"\x1f\x8b"):
            raw = stack.enter_context(gzip.GzipFile(fileobj=fileobj, mode="rb"))
        elif magic.startswith(b"BZh"):
            raw = stack.enter_context(bz2.BZ2File(fileobj))
        elif magic.startswith(b"\xfd7zXZ\x00"):
            raw = stack.enter_context(lzma.LZMAFile(fileobj))
        limit = None if raw is fileobj else max_bytes + max_members * _OVERHEAD_BYTES_PER_MEMBER
        stream = TarStream(raw, limit_bytes=limit, max_bytes=max_bytes)
        try:
            tar = stack.enter_context(
                tarfile.open(  # type: ignore[call-overload]
                    fileobj=stream, mode="r:", tarinfo=_StrictTarInfo
                )
            )
        except READ_ERRORS as exc:
            raise ArchiveError(f"not a readable tar archive: {exc}") from exc
        yield tar, stream


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members as tarfile parses them; its complaints become ``ArchiveError``s. (Only the
    reading: an error writing to our own disk is ours, not the client's.)"""
    members = iter(tar)
    while True:
        try:
            member = next(members)
        except StopIteration:
            return
        except READ_ERRORS as exc:
            raise ArchiveError(f"not a readable tar archive: {exc}") from exc
        yield member


class BulkReader:
    """A member's bytes; its reads are data, so the header limits do not apply to them."""

    def __init__(self, source: IO[bytes], stream: TarStream) -> None:
        self._source = source
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        self._stream.bulk = True
        try:
            return self._source.read(size)
        except READ_ERRORS as exc:
            raise ArchiveError(f"not a readable tar archive: {exc}") from exc
        finally:
            self._stream.bulk = False

    def __enter__(self) -> BulkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._source.close()
