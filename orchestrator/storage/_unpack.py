"""Unpacking a vetted tar into a folder without ever leaving it (used by ``archive.extract``).

Two steps, so a hostile archive fails before its first byte is written:

1. ``Plan`` lays every member into a tree of what the folder will hold, in archive order, and
   refuses what cannot be written plainly: a member below a file or a symlink, a name that
   appears twice as different kinds, a hard link to anything but an earlier file. Then it
   resolves every symlink through that tree (its chains, and links that later members create)
   and refuses any that leave the folder, even for a step, or loop.
2. ``write`` creates the tree through directory file descriptors opened with ``O_NOFOLLOW``,
   files with ``O_EXCL``, and the symlinks last (as GNU tar defers them), so nothing is ever
   written through a link, whatever was on disk; each link is then checked once more with
   ``os.path.realpath`` against the folder.

Nothing here depends on tarfile's extraction filters (absent before Python 3.11.4): tarfile only
parses the stream.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from ..errors import ArchiveError, ArchiveTooLarge

_CHUNK = 1024 * 1024
# Linux gives up after 40 links in one lookup (MAXSYMLINKS); a build needs nowhere near it.
_MAX_LINK_DEPTH = 40
# Every symlink is followed twice (in the plan, then by realpath on disk), and realpath does not
# remember what it resolved: the components of all targets together bound that work, or a 100 KB
# archive of links to long chains costs minutes of CPU.
_MAX_LINK_COMPONENTS = 100_000
_MAX_LINK_TARGET_BYTES = 4095
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What the disk says when a path is not what the plan made it: a planted link, a file where a
# folder should be. The archive cannot be written as it is, which is the client's problem.
_REFUSED_ERRNOS = frozenset(
    {errno.ELOOP, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}
)


class Kind(Enum):
    DIR = "directory"
    FILE = "file"
    LINK = "symlink"


@dataclass(eq=False)
class Node:
    kind: Kind
    parent: Node | None
    name: str = ""
    member: tarfile.TarInfo | None = None  # None: the folder itself, or a folder made implicitly
    children: dict[str, Node] = field(default_factory=dict)
    # Where a symlink leads: a node, plus how many missing components lie below it.
    resolved: tuple[Node, int] | None = None
    resolving: bool = False

    def path(self) -> str:
        parts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))


@dataclass
class Step:
    """One write, in archive order: a folder, a file, or a file copied from an earlier one."""

    parts: tuple[str, ...]
    member: tarfile.TarInfo
    copy_of: tuple[str, ...] | None = None


class Plan:
    def __init__(self) -> None:
        self.root = Node(Kind.DIR, None)
        self.steps: list[Step] = []
        self.links: list[tuple[tuple[str, ...], Node]] = []
        self._link_components = 0

    def add(self, member: tarfile.TarInfo, parts: tuple[str, ...], target: tuple[str, ...]) -> None:
        """Lay one member (its name split by ``archive``) into the tree, or refuse it."""
        name = member.name
        if not parts:
            if not member.isdir():
                raise ArchiveError(f"archive member {name!r} names the folder itself")
            return  # `tar -C DIR .` stores the folder as "./": it exists already
        node = self.root
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = Node(Kind.DIR, node, part)
            elif child.kind is not Kind.DIR:
                raise ArchiveError(
                    f"archive member {name!r} needs {child.path()!r} to be a directory, but "
                    f"{child.path()!r} is a {child.kind.value} in the archive"
                )
            node = child
        kind = Kind.DIR if member.isdir() else Kind.LINK if member.issym() else Kind.FILE
        leaf = parts[-1]
        existing = node.children.get(leaf)
        if existing is not None and (existing.kind is not kind or kind is Kind.LINK):
            raise ArchiveError(
                f"archive member {name!r} appears twice, as a {existing.kind.value} and as a "
                f"{kind.value}"
            )
        if member.islnk():
            source = self._find(target)
            if source is None or source.kind is not Kind.FILE:
                raise ArchiveError(
                    f"archive member {name!r} is a hard link to {member.linkname!r}, which is not "
                    "a file earlier in the archive"
                )
        if kind is Kind.LINK:
            if len(member.linkname.encode()) > _MAX_LINK_TARGET_BYTES:
                raise ArchiveError(
                    f"archive member {name!r} links to a target over {_MAX_LINK_TARGET_BYTES} "
                    "bytes long"
                )
            self._link_components += member.linkname.count("/") + 1
            if self._link_components > _MAX_LINK_COMPONENTS:
                raise ArchiveError(
                    f"archive member {name!r}: the archive's symbolic links name more than "
                    f"{_MAX_LINK_COMPONENTS} path components in all"
                )
        if existing is None:
            existing = node.children[leaf] = Node(kind, node, leaf, member)
        existing.member = member
        if kind is Kind.LINK:
            self.links.append((parts, existing))
        elif not (member.islnk() and target == parts):  # a hard link to itself changes nothing
            self.steps.append(Step(parts, member, target if member.islnk() else None))

    def _find(self, parts: tuple[str, ...]) -> Node | None:
        node: Node | None = self.root
        for part in parts:
            if node is None or node.kind is not Kind.DIR:
                return None
            node = node.children.get(part)
        return node

    def check_links(self) -> None:
        """Follow every symlink as the kernel would once all are in place; none may leave."""
        for _parts, node in self.links:
            self._resolve(node, 0)

    def _resolve(self, link: Node, depth: int) -> tuple[Node, int]:
        if link.resolved is not None:
            return link.resolved
        member = link.member
        assert member is not None and link.parent is not None
        if link.resolving:
            raise ArchiveError(
                f"archive member {member.name!r} links to {member.linkname!r}, a loop of "
                "symbolic links"
            )
        if depth >= _MAX_LINK_DEPTH:
            raise ArchiveError(
                f"archive member {member.name!r} links to {member.linkname!r}, through more than "
                f"{_MAX_LINK_DEPTH} symbolic links"
            )
        link.resolving = True
        where, missing = link.parent, 0
        for part in member.linkname.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if missing:
                    missing -= 1
                elif where.parent is None:
                    # Refused even when a later step would come back: the text of a link that
                    # passes outside depends on what lies outside.
                    raise ArchiveError(
                        f"archive member {member.name!r} links to {member.linkname!r}, which "
                        "leads outside the directory"
                    )
                else:
                    where = where.parent
                continue
            child = None if missing or where.kind is not Kind.DIR else where.children.get(part)
            if child is None:
                missing += 1  # dangling from here on, but a later '..' still counts
            elif child.kind is Kind.LINK:
                where, missing = self._resolve(child, depth + 1)
            else:
                where = child
        link.resolving = False
        link.resolved = (where, missing)
        return link.resolved


def file_mode(member: tarfile.TarInfo) -> int:
    # No setuid/setgid/sticky and no group/other write; the owner (we) can always read and
    # write, since the folder is copied into the container and then deleted by us.
    return (member.mode & 0o755) | 0o600


def dir_mode(member: tarfile.TarInfo) -> int:
    return (member.mode & 0o755) | 0o700


def _refuse(name: str, exc: OSError) -> ArchiveError:
    return ArchiveError(f"archive member {name!r} cannot be written here: {exc.strerror}")


def _open_dir(parent_fd: int, part: str, *, create: bool) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    with suppress(FileExistsError):  # made meanwhile: the open below still refuses a link
        os.mkdir(part, 0o700, dir_fd=parent_fd)
    fd = os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
    os.fchmod(fd, 0o755)
    return fd


class Cursor:
    """Directory descriptors along one path below the folder, reused from member to member."""

    def __init__(self, root_fd: int) -> None:
        self._fds = [root_fd]
        self._parts: list[str] = []

    def go(self, parts: tuple[str, ...]) -> int:
        keep = 0
        while keep < min(len(parts), len(self._parts)) and parts[keep] == self._parts[keep]:
            keep += 1
        while len(self._parts) > keep:
            self._parts.pop()
            os.close(self._fds.pop())
        for part in parts[keep:]:
            self._fds.append(_open_dir(self._fds[-1], part, create=True))
            self._parts.append(part)
        return self._fds[-1]

    def close(self) -> None:
        self.go(())


@contextmanager
def _walk(root_fd: int, parts: tuple[str, ...]) -> Iterator[int]:
    """A descriptor for an existing folder below the root, reached without following links."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            nxt = _open_dir(fd, part, create=False)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _new_file(parent_fd: int, leaf: str) -> int:
    try:
        return os.open(leaf, NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
    except FileExistsError:
        # A repeated file member (what `tar -r` makes): the last copy wins, as in tar. Only a
        # plain file is replaced, by a new inode, so nothing that shared the old one changes.
        if not stat.S_ISREG(os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            raise
        os.unlink(leaf, dir_fd=parent_fd)
        return os.open(leaf, NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Budget:
    """Bytes actually written, against the cap (hard-link copies and sparse holes count)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.written_bytes = 0

    def copy(self, source: Source, fd: int) -> None:
        with open(fd, "wb", closefd=False) as out:
            while chunk := source.read(_CHUNK):
                self.written_bytes += len(chunk)
                if self.written_bytes > self.max_bytes:
                    raise ArchiveTooLarge(
                        f"archive unpacks to more than {self.max_bytes} bytes",
                        limit_bytes=self.max_bytes,
                    )
                out.write(chunk)


def write(
    plan: Plan,
    dest: Path,
    open_member: Callable[[tarfile.TarInfo], AbstractContextManager[Source]],
    budget: Budget,
) -> None:
    """Create what ``plan`` holds below ``dest``; ``open_member`` gives a file member's bytes."""
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    cursor = Cursor(root_fd)
    name = ""
    try:
        for step in plan.steps:
            name = step.member.name
            if step.member.isdir():
                os.fchmod(cursor.go(step.parts), dir_mode(step.member))
                continue
            parent_fd = cursor.go(step.parts[:-1])
            fd = _new_file(parent_fd, step.parts[-1])
            try:
                if step.copy_of is None:
                    with open_member(step.member) as source:
                        budget.copy(source, fd)
                else:
                    with _walk(root_fd, step.copy_of[:-1]) as source_dir:
                        src_fd = os.open(
                            step.copy_of[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=source_dir
                        )
                        with open(src_fd, "rb") as source:
                            budget.copy(source, fd)
                os.fchmod(fd, file_mode(step.member))
                # A time the filesystem cannot hold is not worth refusing the build for.
                with suppress(OverflowError, ValueError, OSError):
                    os.utime(fd, (step.member.mtime, step.member.mtime))
            finally:
                os.close(fd)
        made: list[tuple[str, ...]] = []
        for parts, node in plan.links:
            assert node.member is not None
            name = node.member.name
            os.symlink(node.member.linkname, parts[-1], dir_fd=cursor.go(parts[:-1]))
            made.append(parts)
        try:
            _recheck_links(plan, dest)
        except ArchiveError:
            # Not even inside the folder should a link out outlive the refusal.
            for parts in made:
                os.unlink(parts[-1], dir_fd=cursor.go(parts[:-1]))
            raise
    except OSError as exc:
        if exc.errno in _REFUSED_ERRNOS:
            raise _refuse(name, exc) from exc
        raise
    finally:
        cursor.close()
        os.close(root_fd)


def _recheck_links(plan: Plan, dest: Path) -> None:
    """The plan's verdict, asked again of the disk: where each link really leads."""
    real_dest = os.path.realpath(dest)
    for parts, node in plan.links:
        assert node.member is not None
        real = os.path.realpath(os.path.join(real_dest, *parts))
        if real != real_dest and not real.startswith(real_dest + os.sep):
            raise ArchiveError(
                f"archive member {node.member.name!r} links to {node.member.linkname!r}, which "
                "leads outside the directory"
            )
