"""Static reader for PKGBUILD metadata.

A PKGBUILD is bash written by whoever submits the build, so it is never executed here: no
subprocess, no shell. A small lexer (``_shlex``) understands enough bash to read the top-level
assignments and the names of the functions, so that a malformed file is rejected with a
line-numbered error before any container starts.

What cannot be evaluated statically is tolerated rather than rejected, because makepkg would
accept it: ``${var//a/b}`` and brace expansion are kept as written, assignments inside ``if``,
``case``, loops or after ``&&`` are not applied, and every check whose outcome depends on such a
value (name syntax, checksum counts, local files) is skipped for it. The exception is a command
substitution in one of the metadata variables below: its value matters and can't be known, so
that is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._shlex import CMD, LIT, REDIRECTIONS, VAR, Lexer, Part, Token
from .errors import PkgbuildError

__all__ = ["PkgInfo", "parse", "parse_dir"]


@dataclass(frozen=True, slots=True)
class PkgInfo:
    """What a PKGBUILD declares, as far as it can be known without running it."""

    pkgname: tuple[str, ...]
    pkgbase: str | None
    pkgver: str
    pkgrel: str
    epoch: str | None
    pkgdesc: str | None
    arch: tuple[str, ...]
    license: tuple[str, ...]
    depends: tuple[str, ...]
    makedepends: tuple[str, ...]
    source: tuple[str, ...]
    sha256sums: tuple[str, ...]
    functions: frozenset[str]
    local_sources: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.pkgbase or self.pkgname[0]

    @property
    def full_version(self) -> str:
        # makepkg leaves a zero epoch out of the version string.
        if self.epoch and self.epoch.strip("0"):
            return f"{self.epoch}:{self.pkgver}-{self.pkgrel}"
        return f"{self.pkgver}-{self.pkgrel}"


_METADATA = frozenset({"pkgname", "pkgbase", "pkgver", "pkgrel", "epoch", "pkgdesc", "arch",
                       "license", "depends", "makedepends", "source", "sha256sums"})  # fmt: skip
_CHECKSUMS = ("cksums", "md5sums", "sha1sums", "sha224sums", "sha256sums", "sha384sums",
              "sha512sums", "b2sums")  # fmt: skip
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+", "fossil+")
_OPEN_KW = frozenset({"if", "case", "for", "while", "until", "select", "{"})
_CLOSE_KW = frozenset({"fi", "esac", "done", "}"})
_PREFIX_KW = frozenset({"then", "do", "else", "elif", "!", "time"})
_DECLARE = frozenset({"export", "declare", "typeset", "readonly"})
_DYNAMIC = frozenset({"eval", "source", "."})  # can define functions we can't see
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\+?)=")
_INDEXED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[[^]]*\]\+?=")
_BRACE_EXPANSION = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
_IFS = re.compile(r"[ \t\n]+")
_PKGNAME = re.compile(r"[A-Za-z0-9@_+][A-Za-z0-9@._+-]*")
_PKGREL = re.compile(r"[0-9]+(\.[0-9]+)?")
_EPOCH = re.compile(r"[0-9]+")
# Bounds that keep hostile input (a=("${a[@]}" "${a[@]}") repeated) from exhausting memory.
_MAX_SIZE = 512 * 1024  # real PKGBUILDs stay far below; bounds the time spent on one
_MAX_TEXT = 1 << 20
_MAX_ITEMS = 10_000

_Cmd = tuple[int, str | None]  # line of a command substitution, variable it came through


@dataclass(slots=True)
class _Item:
    """One value (a scalar, or one array element) and what is known about where it came from."""

    text: str
    line: int  # line of the assignment that set it
    exact: bool = True  # False when it still holds text the reader could not expand
    cmd: _Cmd | None = None


@dataclass(slots=True)
class _Assign:
    name: str
    append: bool
    line: int
    words: list[Token]
    is_array: bool


class _Reader:
    """Walks the top-level tokens, keeping assignments and the names of functions."""

    def __init__(self, text: str) -> None:
        self.toks = Lexer(text).tokens()
        self.pos = 0
        self.vars: dict[str, list[_Item]] = {}
        self.lines: dict[str, int] = {}  # line of the last assignment to each variable
        self.uncertain: set[str] = set()  # maybe changed by code we can't evaluate
        self.functions: set[str] = set()
        self.dynamic = False  # eval or source seen: functions may exist that we can't see
        self.depth = 0  # inside if/case/loops, whose assignments may or may not happen
        self.conditional = False  # after && || |, same reason

    def peek(self, k: int = 0) -> Token:
        return self.toks[min(self.pos + k, len(self.toks) - 1)]

    def _is_op(self, k: int, text: str) -> bool:
        tok = self.peek(k)
        return tok.kind == "op" and tok.text == text

    def certain(self, name: str) -> bool:
        return name not in self.uncertain and all(i.exact for i in self.vars.get(name, []))

    def run(self) -> None:
        while (tok := self.peek()).kind != "eof":
            if tok.kind != "word":
                self.pos += 1
                if tok.text in ("&&", "||", "|", "|&"):
                    self.conditional = True
                elif tok.text in REDIRECTIONS and self.peek().kind == "word":
                    self.pos += 1
                elif tok.text not in ("(", ")"):
                    self.conditional = False
            elif tok.text in _PREFIX_KW:
                self.pos += 1
            elif tok.text in _CLOSE_KW:
                self.depth = max(0, self.depth - 1)
                self.pos += 1
            elif tok.text == "function" and self.peek(1).kind == "word":
                self._function(self.peek(1).text, tok.line, self.pos + 2)
            elif not _ASSIGN.match(tok.text) and self._is_op(1, "(") and self._is_op(2, ")"):
                self._function(tok.text, tok.line, self.pos + 1)
            else:
                if tok.text in _OPEN_KW:
                    self.depth += 1
                self._command()

    def _function(self, name: str, line: int, pos: int) -> None:
        self.pos = pos
        if self._is_op(0, "(") and self._is_op(1, ")"):
            self.pos += 2
        while self.peek().kind == "nl":
            self.pos += 1
        opener = self.peek()
        closer = {"{": "}", "(": ")"}.get(opener.text) if opener.kind in ("word", "op") else None
        if opener.kind != "eof" and closer is None:
            raise PkgbuildError(f"expected '{{' to start the body of function '{name}'", line)
        # The body is never interpreted: only its braces are counted. The lexer has already
        # taken care of quotes, ${...}, $(...), comments and heredocs, where braces don't count.
        depth = 0
        while (tok := self.peek()).kind != "eof":
            self.pos += 1
            if tok.kind == opener.kind and tok.text in (opener.text, closer):
                depth += 1 if tok.text == opener.text else -1
                if depth == 0:
                    self.functions.add(name)
                    return
        raise PkgbuildError(f"unterminated body of function '{name}' (started here)", line)

    def _command(self) -> None:
        command: str | None = None
        assigns: list[_Assign] = []
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in REDIRECTIONS:
                self.pos += 2 if self.peek(1).kind == "word" else 1
                continue
            if tok.kind != "word":
                break
            self.pos += 1
            m = _ASSIGN.match(tok.text)
            if m and (command is None or command in _DECLARE):
                nxt = self.peek()
                if m.end() == len(tok.text) and self._is_op(0, "(") and nxt.start == tok.end:
                    words = self._array(m[1], nxt)
                    assigns.append(_Assign(m[1], bool(m[2]), tok.line, words, True))
                else:
                    assigns.append(_Assign(m[1], bool(m[2]), tok.line, [tok], False))
            elif command is None and (indexed := _INDEXED.match(tok.text)):
                self.uncertain.add(indexed[1])  # arr[i]=x: the index may be an expression
            elif command is None:
                command = tok.text
                self.dynamic = self.dynamic or command in _DYNAMIC
        if command is not None and command not in _DECLARE:
            return  # VAR=x cmd only sets VAR for cmd
        if self.depth or self.conditional:
            self.uncertain.update(a.name for a in assigns)
        else:
            for a in assigns:
                self._assign(a)

    def _array(self, name: str, opener: Token) -> list[Token]:
        self.pos += 1
        words: list[Token] = []
        while (tok := self.peek()).kind != "eof" and tok.text != "(":
            self.pos += 1
            if tok.kind == "word":
                words.append(tok)
            elif tok.kind == "op" and tok.text == ")":
                return words
            elif tok.kind == "op":
                raise PkgbuildError(f"unexpected '{tok.text}' in the array for '{name}'", tok.line)
        # A "(" here almost always means the ")" was forgotten and the next line got swallowed.
        raise PkgbuildError(f"unterminated array for '{name}' (opened here)", opener.line)

    def _assign(self, a: _Assign) -> None:
        items: list[_Item] = []
        for word in a.words:
            parts = word.parts
            if not a.is_array:  # drop the leading "name=" or "name+="
                head = _ASSIGN.match(word.text)
                assert head is not None
                rest = parts[0].text[head.end() :]
                parts = ([Part(LIT, rest, False, word.line)] if rest else []) + parts[1:]
            expanded = self._expand(parts, a.is_array, a.line)
            if a.name in _METADATA:
                _reject_command_substitution(a.name, expanded, word.line)
            items += expanded
        if not a.is_array:
            items = items or [_Item("", a.line)]
        old = self.vars.get(a.name)
        if a.append and old and not a.is_array:
            first = items[0]
            exact = old[0].exact and first.exact
            items = [_Item(old[0].text + first.text, a.line, exact, old[0].cmd or first.cmd)]
            items += old[1:]
        elif a.append and old:
            items = old + items
        if not a.append:
            self.uncertain.discard(a.name)
        if any(p.kind == VAR and p.text in self.uncertain for w in a.words for p in w.parts):
            self.uncertain.add(a.name)
        if len(items) > _MAX_ITEMS or sum(len(i.text) for i in items) > _MAX_TEXT:
            raise PkgbuildError(f"{a.name} grows too large", a.line)
        self.vars[a.name] = items
        self.lines[a.name] = a.line

    def _expand(self, parts: list[Part], split: bool, line: int) -> list[_Item]:
        """Expand one word; ``split`` for array elements, which bash word-splits."""
        # Chunks are (text, subject to word splitting, what is known of it); None ends a word.
        chunks: list[tuple[str, bool, _Item] | None] = []
        size = 0
        for p in parts:
            if size > _MAX_TEXT or len(chunks) > 2 * _MAX_ITEMS:
                raise PkgbuildError(
                    "a value is too large to read (over 1 MiB or 10000 words)", line
                )
            values = self.vars.get(p.text, []) if p.kind == VAR else []
            if p.kind != VAR:
                exact = p.kind == LIT and (p.quoted or not _BRACE_EXPANSION.search(p.text))
                direct: _Cmd | None = (p.line, None) if p.kind == CMD else None
                chunks.append((p.text, False, _Item(p.text, line, exact, direct)))
            elif split and p.index == "@":  # one word per element
                for k, value in enumerate(values):
                    item = _Item(value.text, line, value.exact, _via(value.cmd, p.text))
                    if k:
                        chunks.append(None)
                    chunks.append((value.text, not p.quoted, item))
            else:
                if p.index is None:
                    values = values[:1]
                elif p.index not in ("@", "*"):
                    index = int(p.index)
                    values = values[index : index + 1 or None]
                text = " ".join(v.text for v in values)
                cmd = _via(next((v.cmd for v in values if v.cmd), None), p.text)
                item = _Item(text, line, all(v.exact for v in values), cmd)
                chunks.append((text, split and not p.quoted, item))
            size += len(p.text) + sum(len(v.text) for v in values)
        fields: list[_Item] = []
        cur: _Item | None = None
        pieces: list[str] = []
        for chunk in [*chunks, None]:
            text, splits, known = chunk or ("", True, _Item("", line))
            for k, piece in enumerate(_IFS.split(text) if splits else [text]):
                if (k or chunk is None) and cur is not None:
                    cur.text = "".join(pieces)
                    fields.append(cur)
                    cur, pieces = None, []
                if piece or not splits:  # quoted text makes a word even when empty
                    cur = cur or _Item("", line)
                    pieces.append(piece)
                    cur.exact = cur.exact and known.exact
                    cur.cmd = cur.cmd or known.cmd
        return fields


def _via(cmd: _Cmd | None, name: str) -> _Cmd | None:
    return None if cmd is None else (cmd[0], name)


def _reject_command_substitution(name: str, items: list[_Item], line: int) -> None:
    for item in items:
        if item.cmd is None:
            continue
        cmd_line, via = item.cmd
        if via is None:
            msg = f"{name} uses a command substitution, which can't be evaluated statically;"
            raise PkgbuildError(f"{msg} write the value literally", cmd_line)
        msg = f"{name} uses ${via}, which comes from a command substitution (line {cmd_line})"
        raise PkgbuildError(f"{msg} and can't be evaluated statically", line)


def _check(item: _Item, pattern: re.Pattern[str], what: str, rule: str) -> None:
    if item.exact and not pattern.fullmatch(item.text):
        raise PkgbuildError(f"invalid {what} '{item.text}': {rule}", item.line)


def _required(reader: _Reader, name: str) -> list[_Item]:
    items = reader.vars.get(name)
    if items is None and name in reader.uncertain:
        raise PkgbuildError(f"{name} is only set conditionally, so its value can't be known")
    if items is None:
        raise PkgbuildError(f"{name} is not set")
    if not items or not items[0].text:
        raise PkgbuildError(f"{name} is empty", reader.lines[name])
    return items


def _check_package_functions(reader: _Reader, names: list[_Item]) -> None:
    funcs = reader.functions
    if reader.dynamic:
        return
    if not any(f == "package" or f.startswith("package_") for f in funcs):
        raise PkgbuildError("no package() function")
    if not reader.certain("pkgname"):
        return
    if len(names) == 1:
        if "package" not in funcs and f"package_{names[0].text}" not in funcs:
            raise PkgbuildError("no package() function")
        return
    for item in names:
        if f"package_{item.text}" not in funcs:
            msg = f"split package '{item.text}' has no package_{item.text}() function"
            raise PkgbuildError(msg, reader.lines["pkgname"])


def _local_sources(reader: _Reader) -> list[_Item]:
    local: list[_Item] = []
    for item in reader.vars.get("source", []):
        filename, sep, url = item.text.partition("::")
        target = url if sep else filename
        remote = "://" in target or target.startswith(_VCS_PREFIXES)
        if remote and not sep:
            continue  # makepkg names the download after the URL's last component
        if not filename:
            raise PkgbuildError(f"source entry '{item.text}' names no file", item.line)
        # "name::url" makes makepkg write the download to "name", so it must stay inside too.
        if filename.startswith(("/", "~")) or ".." in filename.split("/"):
            msg = f"source entry '{item.text}' escapes the build directory"
            raise PkgbuildError(msg, item.line)
        if not remote:
            local.append(_Item(filename, item.line, item.exact))
    return local


def _too_large() -> PkgbuildError:
    return PkgbuildError(f"the PKGBUILD is larger than {_MAX_SIZE // 1024} KiB")


def _read(text: str) -> tuple[PkgInfo, list[_Item]]:
    if len(text) > _MAX_SIZE:
        raise _too_large()
    for bad, what in (("\0", "a NUL byte"), ("\r\n", "Windows (CRLF) line endings")):
        if bad in text:
            line = text.count("\n", 0, text.index(bad)) + 1
            raise PkgbuildError(f"the PKGBUILD has {what}", line)
    try:
        reader = _Reader(text)
        reader.run()
    except RecursionError:
        raise PkgbuildError("the PKGBUILD nests $(...) or quotes too deeply to read") from None

    names = _required(reader, "pkgname")
    rule = "use letters, digits and @._+- only, not starting with '-' or '.'"
    for item in names:
        _check(item, _PKGNAME, "pkgname", rule)
    for item in reader.vars.get("pkgbase", [])[:1]:
        _check(item, _PKGNAME, "pkgbase", rule)
    pkgver = _required(reader, "pkgver")[0]
    if pkgver.exact and re.search(r"[:/\-\s]", pkgver.text):
        rule = "it must not contain ':', '/', '-' or whitespace"
        raise PkgbuildError(f"invalid pkgver '{pkgver.text}': {rule}", pkgver.line)
    pkgrel = _required(reader, "pkgrel")[0]
    _check(pkgrel, _PKGREL, "pkgrel", "it must be a number such as 1 or 2.1")
    epoch = next(iter(reader.vars.get("epoch", [])), None)
    if epoch is not None and epoch.text:  # makepkg accepts an empty epoch
        _check(epoch, _EPOCH, "epoch", "it must be a whole number")
    _check_package_functions(reader, names)

    n_sources = len(reader.vars.get("source", []))
    for kind in _CHECKSUMS:
        sums = reader.vars.get(kind)
        certain = reader.certain(kind) and reader.certain("source")
        if sums is not None and len(sums) != n_sources and certain:
            msg = f"{kind} has {len(sums)} entries but source has {n_sources}"
            raise PkgbuildError(msg, reader.lines[kind])
    local = _local_sources(reader)

    def texts(name: str) -> tuple[str, ...]:
        return tuple(i.text for i in reader.vars.get(name, []))

    def scalar(name: str) -> str | None:
        return next(iter(texts(name)), None)

    info = PkgInfo(
        pkgname=texts("pkgname"),
        pkgbase=scalar("pkgbase"),
        pkgver=pkgver.text,
        pkgrel=pkgrel.text,
        epoch=scalar("epoch") or None,
        pkgdesc=scalar("pkgdesc"),
        arch=texts("arch"),
        license=texts("license"),
        depends=texts("depends"),
        makedepends=texts("makedepends"),
        source=texts("source"),
        sha256sums=texts("sha256sums"),
        functions=frozenset(reader.functions),
        local_sources=tuple(dict.fromkeys(i.text for i in local)),
    )
    return info, local


def parse(text: str) -> PkgInfo:
    """Read a PKGBUILD's metadata without executing it; raise PkgbuildError if it is malformed."""
    return _read(text)[0]


def parse_dir(build_dir: Path, *, filename: str = "PKGBUILD") -> PkgInfo:
    """Parse ``build_dir/filename`` and check that its local sources are files inside build_dir."""
    root = build_dir.resolve()
    path = build_dir / filename
    if not path.is_file():
        raise PkgbuildError(f"no {filename} in the build directory")
    if not path.resolve().is_relative_to(root):
        raise PkgbuildError(f"{filename} is a link that points outside the build directory")
    try:
        if path.stat().st_size > _MAX_SIZE:
            raise _too_large()
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PkgbuildError(f"{filename} is not UTF-8 text") from exc
    except OSError as exc:
        raise PkgbuildError(f"cannot read {filename}: {exc.strerror}") from exc
    info, local = _read(text)
    for item in local:
        if not item.exact:  # still holds unexpanded text, so the real name is unknown
            continue
        candidate = root / item.text
        if not candidate.resolve().is_relative_to(root):
            msg = f"source entry '{item.text}' is a link that points outside the build directory"
            raise PkgbuildError(msg, item.line)
        if not candidate.exists():
            msg = f"source file '{item.text}' is not in the build directory"
            raise PkgbuildError(msg, item.line)
        if not candidate.is_file():
            raise PkgbuildError(f"source entry '{item.text}' is not a regular file", item.line)
    return info
