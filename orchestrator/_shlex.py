"""A lexer for the subset of bash that PKGBUILDs are written in; used by ``pkgbuild``.

It turns source text into words and operators and never evaluates anything. Comments, line
continuations and heredoc bodies disappear here, and every word is broken into parts (literal
text, ``$var``/``${var}``, ``$(...)``, expansions it cannot evaluate) so that the caller can
expand variables itself. Errors point at the line where the unterminated construct opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import PkgbuildError

# Kinds of the parts a word is made of.
LIT, VAR, OPAQUE, CMD = range(4)

REDIRECTIONS = frozenset({"<", ">", "<<", "<<-", "<<<", ">>", "<&", ">&", "<>", ">|", "&>", "&>>"})
_OPERATORS = REDIRECTIONS | {";", ";;", ";&", ";;&", "&", "&&", "|", "||", "|&", "(", ")"}
_OPERATOR = re.compile("|".join(map(re.escape, sorted(_OPERATORS, key=len, reverse=True))))
_PARENS = re.compile(r"[()]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(@|\*|-?[0-9]+)\])?")
_PLAIN = re.compile(r"[^ \t\n;&|<>()\\'\"`$]+")
_DQ_PLAIN = re.compile(r"[^\\\"`$]+")
_ANSI_NUM = re.compile(r"x([0-9A-Fa-f]{1,2})|([0-7]{1,3})")
_ANSI = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
         "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}  # fmt: skip


@dataclass(slots=True)
class Part:
    kind: int
    text: str  # literal text, variable name, or the raw source of what can't be expanded
    quoted: bool
    line: int
    index: str | None = None  # subscript of ${name[...]}


@dataclass(slots=True)
class Token:
    kind: str  # "word", "op", "nl" or "eof"
    text: str  # raw source text
    line: int
    start: int
    end: int
    parts: list[Part] = field(default_factory=list)


class Lexer:
    """Splits bash source into words and operators; comments and heredoc bodies vanish here."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self._heredocs: list[tuple[str, bool, int]] = []  # delimiter, strip tabs, line of <<
        self._want_delim: tuple[bool, int] | None = None

    def tokens(self) -> list[Token]:
        out = [self.next()]
        while out[-1].kind != "eof":
            out.append(self.next())
        return out

    def _goto(self, j: int) -> None:
        self.line += self.s.count("\n", self.i, j)
        self.i = j

    def _at(self, k: int = 0) -> str:
        return self.s[self.i + k : self.i + k + 1]

    def next(self) -> Token:
        s = self.s
        while True:
            c = self._at()
            if c in (" ", "\t"):
                self._goto(self.i + 1)
            elif c == "\\" and self._at(1) == "\n":
                self._goto(self.i + 2)
            elif c == "#":  # only reached at the start of a word, where # begins a comment
                j = s.find("\n", self.i)
                self._goto(len(s) if j < 0 else j)
            else:
                break
        start, line = self.i, self.line
        if not c:
            return Token("eof", "", line, start, start)
        if c == "\n":
            self._goto(start + 1)
            self._want_delim = None
            self._skip_heredocs()
            return Token("nl", c, line, start, start + 1)
        if s.startswith("((", start):  # arithmetic command: its << is a shift, not a heredoc
            self._arithmetic(start)
            text = s[start : self.i]
            return Token("word", text, line, start, self.i, [Part(OPAQUE, text, False, line)])
        if m := _OPERATOR.match(s, start):
            op = m[0]
            self._goto(m.end())
            self._want_delim = (op == "<<-", line) if op in ("<<", "<<-") else None
            return Token("op", op, line, start, self.i)
        parts = self._word()
        tok = Token("word", s[start : self.i], line, start, self.i, parts)
        if self._want_delim is not None:
            self._heredocs.append((re.sub(r"[\"'\\]", "", tok.text), *self._want_delim))
            self._want_delim = None
        return tok

    def _skip_heredocs(self) -> None:
        # Bash reads heredoc bodies line by line up to the delimiter, whatever they contain.
        for delim, strip, line in self._heredocs:
            while True:
                if self.i >= len(self.s):
                    raise PkgbuildError(f"unterminated here-document (no line '{delim}')", line)
                j = self.s.find("\n", self.i)
                end = len(self.s) if j < 0 else j
                body = self.s[self.i : end]
                self._goto(min(end + 1, len(self.s)))
                if (body.lstrip("\t") if strip else body) == delim:
                    break
        self._heredocs.clear()

    def _lit(self, parts: list[Part], text: str, quoted: bool) -> None:
        # Never merged into the previous part: repeated str += is quadratic on hostile input.
        parts.append(Part(LIT, text, quoted, self.line))

    def _word(self) -> list[Part]:
        parts: list[Part] = []
        while (c := self._at()) and c not in " \t\n;&|<>()":
            if c == "\\":
                nxt = self._at(1)
                if nxt != "\n":
                    self._lit(parts, nxt or c, True)
                self._goto(min(self.i + 2, len(self.s)))
            elif c == "'":
                self._lit(parts, self._squote(), True)
            elif c == '"':
                self._dquote(parts)
            elif c == "`":
                self._backtick(parts, False)
            elif c == "$":
                self._dollar(parts, False)
            else:
                m = _PLAIN.match(self.s, self.i)
                assert m is not None
                self._lit(parts, m[0], False)
                self._goto(m.end())
        return parts

    def _squote(self) -> str:
        j = self.s.find("'", self.i + 1)
        if j < 0:
            raise PkgbuildError("unterminated single quote (opened here)", self.line)
        text = self.s[self.i + 1 : j]
        self._goto(j + 1)
        return text

    def _dquote(self, parts: list[Part]) -> None:
        line, before = self.line, len(parts)
        self._goto(self.i + 1)
        while (c := self._at()) != '"':
            if not c:
                raise PkgbuildError("unterminated double quote (opened here)", line)
            if c == "\\":
                nxt = self._at(1)
                if nxt in ("$", "`", '"', "\\"):
                    self._lit(parts, nxt, True)
                    self._goto(self.i + 2)
                elif nxt == "\n":  # a line continuation, even inside ""
                    self._goto(self.i + 2)
                else:
                    self._lit(parts, c, True)
                    self._goto(self.i + 1)
            elif c == "$":
                self._dollar(parts, True)
            elif c == "`":
                self._backtick(parts, True)
            else:
                m = _DQ_PLAIN.match(self.s, self.i)
                assert m is not None
                self._lit(parts, m[0], True)
                self._goto(m.end())
        self._goto(self.i + 1)
        if len(parts) == before:  # "" is still a word, unlike "${empty[@]}"
            self._lit(parts, "", True)

    def _backtick(self, parts: list[Part], quoted: bool) -> None:
        start, line = self.i, self.line
        j = start + 1
        while j < len(self.s) and self.s[j] != "`":
            j += 2 if self.s[j] == "\\" else 1
        if j >= len(self.s):
            raise PkgbuildError("unterminated backquote (opened here)", line)
        self._goto(j + 1)
        parts.append(Part(CMD, self.s[start : self.i], quoted, line))

    def _dollar(self, parts: list[Part], quoted: bool) -> None:
        s, start, line = self.s, self.i, self.line
        nxt = self._at(1)
        if nxt == "(" and self._at(2) == "(":
            self._arithmetic(start + 1)
            parts.append(Part(OPAQUE, s[start : self.i], quoted, line))
        elif nxt == "(":
            self._goto(start + 2)
            self._command_substitution(line)
            parts.append(Part(CMD, s[start : self.i], quoted, line))
        elif nxt == "{":
            self._braced(quoted)
            m = _PARAM.fullmatch(s, start + 2, self.i - 1)
            if m:
                parts.append(Part(VAR, m[1], quoted, line, m[2]))
            else:
                parts.append(Part(OPAQUE, s[start : self.i], quoted, line))
        elif nxt == "'" and not quoted:
            self._ansi_c(parts)
        elif nxt == '"' and not quoted:  # $"..." is a translatable string: read it as "..."
            self._goto(start + 1)
            self._dquote(parts)
        elif m := _NAME.match(s, start + 1):
            parts.append(Part(VAR, m[0], quoted, line))
            self._goto(m.end())
        elif nxt and nxt in "0123456789@*#?$!-":  # positional/special: empty at top level
            parts.append(Part(VAR, nxt, quoted, line))
            self._goto(start + 2)
        else:
            self._lit(parts, "$", quoted)
            self._goto(start + 1)

    def _command_substitution(self, line: int) -> None:
        # Read as tokens, so that quotes, comments and heredocs inside are skipped properly.
        depth = cases = 0
        while (tok := self.next()).kind != "eof":
            if tok.kind == "word" and tok.text in ("case", "esac"):
                cases += 1 if tok.text == "case" else -1
            elif tok.kind == "op" and tok.text == "(":
                depth += 1
            elif tok.kind == "op" and tok.text == ")":
                if not depth and cases <= 0:
                    return
                depth = max(0, depth - 1)  # else it ends a case pattern like "x86_64)"
        raise PkgbuildError("unterminated command substitution $( (opened here)", line)

    def _arithmetic(self, begin: int) -> None:
        line, depth = self.line, 0
        for m in _PARENS.finditer(self.s, begin):
            depth += 1 if m[0] == "(" else -1
            if depth == 0:
                self._goto(m.end())
                return
        raise PkgbuildError("unterminated arithmetic expansion $(( (opened here)", line)

    def _braced(self, quoted: bool) -> None:
        line = self.line
        self._goto(self.i + 2)
        while (c := self._at()) != "}":
            if not c:
                raise PkgbuildError("unterminated ${ (opened here)", line)
            if c == "\\":
                self._goto(min(self.i + 2, len(self.s)))
            elif c == "'" and not quoted:
                self._squote()
            elif c == '"':
                self._dquote([])
            elif c == "`":
                self._backtick([], quoted)
            elif c == "$":
                self._dollar([], quoted)
            else:
                self._goto(self.i + 1)
        self._goto(self.i + 1)

    def _ansi_c(self, parts: list[Part]) -> None:
        s, line, j = self.s, self.line, self.i + 2
        out: list[str] = []
        while j < len(s) and s[j] != "'":
            if s[j] == "\\" and (m := _ANSI_NUM.match(s, j + 1)):
                out.append(chr(int(m[1], 16) if m[1] else int(m[2], 8)))
                j = m.end()
            elif s[j] == "\\":
                out.append(_ANSI.get(s[j + 1 : j + 2], s[j : j + 2]))
                j += 2
            else:
                out.append(s[j])
                j += 1
        if j >= len(s):
            raise PkgbuildError("unterminated $' quote (opened here)", line)
        self._goto(j + 1)
        self._lit(parts, "".join(out), True)
