"""The static PKGBUILD reader: metadata without running bash, and line-numbered rejections."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from orchestrator.errors import PkgbuildError
from orchestrator.pkgbuild import PkgInfo, parse, parse_dir

HELLO_C = dedent(
    """\
    # Maintainer: Someone <someone@example.org>
    pkgname=hello
    pkgver=1.2.3
    pkgrel=2
    pkgdesc="Prints \\"hello\\" and exits"
    arch=('x86_64' 'aarch64')
    url="https://example.org/$pkgname"
    license=('MIT')
    depends=('glibc')
    makedepends=('gcc' 'make')
    source=(hello.c
            Makefile)
    sha256sums=('6c7bd98f2a6bb00f7b5541b390b59900cd13ccae8a89ac9f58b359417edb0174'
                'bd1731b0b2498feeac267f91fe3d87c392546079998ccd8a8563341068e0245c')

    build() {
      cd "$srcdir"
      make CFLAGS="${CFLAGS} -Wall" PREFIX=/usr
    }

    check() {
      ./hello | grep -q '^hello$'
    }

    package() {
      make DESTDIR="${pkgdir}" PREFIX=/usr install
      install -Dm644 /dev/stdin "${pkgdir}/usr/share/doc/${pkgname}/README" <<EOF
    hello ${pkgver}: a program with a { brace } and an unbalanced } one
    EOF
    }
    """
)

CARGO = dedent(
    """\
    # Maintainer: Someone <someone@example.org>
    pkgname=ripgrep-lite
    _pkgname=ripgrep
    pkgver=14.1.0
    pkgrel=1
    epoch=1
    pkgdesc='A search tool (cargo build)'
    arch=('x86_64')
    url="https://github.com/BurntSushi/$_pkgname"
    license=('MIT' 'Unlicense')
    depends=('gcc-libs' 'pcre2')
    makedepends=('cargo' 'git')
    options=('!lto')
    source=("$_pkgname-$pkgver.tar.gz::$url/archive/$pkgver.tar.gz")
    sha256sums=('33c6169596a6bbfdc81415910008f26e0809422fda2d849562637996553b2ab6')

    prepare() {
      cd "$_pkgname-$pkgver"
      export RUSTUP_TOOLCHAIN=stable
      cargo fetch --locked --target "$(rustc -vV | sed -n 's/host: //p')"
    }

    build() {
      cd "$_pkgname-$pkgver"
      export RUSTUP_TOOLCHAIN=stable CARGO_TARGET_DIR=target
      cargo build --frozen --release --features 'pcre2'
    }

    check() {
      cd "$_pkgname-$pkgver"
      cargo test --frozen --release
    }

    package() {
      cd "$_pkgname-$pkgver"
      install -Dm755 "target/release/rg" "$pkgdir/usr/bin/rg"
      install -Dm644 LICENSE-MIT -t "$pkgdir/usr/share/licenses/$pkgname"
    }
    """
)

HEADER = "pkgname=demo\npkgver=1.0\npkgrel=1\narch=(any)\npackage() { :; }\n"


def read(body: str) -> PkgInfo:
    """Parse a PKGBUILD made of a valid minimal header followed by ``body``."""
    return parse(HEADER + dedent(body))


def error(text: str) -> PkgbuildError:
    with pytest.raises(PkgbuildError) as info:
        parse(dedent(text))
    return info.value


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return directory


# --- valid files ------------------------------------------------------------------------------


def test_realistic_c_program() -> None:
    info = parse(HELLO_C)
    assert info.pkgname == ("hello",)
    assert info.pkgbase is None
    assert (info.pkgver, info.pkgrel, info.epoch) == ("1.2.3", "2", None)
    assert info.pkgdesc == 'Prints "hello" and exits'
    assert info.arch == ("x86_64", "aarch64")
    assert info.license == ("MIT",)
    assert info.depends == ("glibc",)
    assert info.makedepends == ("gcc", "make")
    assert info.source == ("hello.c", "Makefile")
    assert len(info.sha256sums) == 2
    assert info.functions == {"build", "check", "package"}
    assert info.local_sources == ("hello.c", "Makefile")
    assert info.name == "hello"
    assert info.full_version == "1.2.3-2"


def test_cargo_package() -> None:
    info = parse(CARGO)
    assert info.name == "ripgrep-lite"
    assert info.full_version == "1:14.1.0-1"
    assert info.source == (
        "ripgrep-14.1.0.tar.gz::https://github.com/BurntSushi/ripgrep/archive/14.1.0.tar.gz",
    )
    assert info.local_sources == ()
    assert info.functions == {"prepare", "build", "check", "package"}
    assert info.makedepends == ("cargo", "git")


def test_split_package() -> None:
    info = parse(
        dedent(
            """\
            pkgbase=foo
            pkgname=('foo' 'foo-docs' 'python-foo')
            pkgver=2.0
            pkgrel=1
            arch=('x86_64')
            build() { make; }
            package_foo() { make DESTDIR="$pkgdir" install; }
            package_foo-docs() {
              pkgdesc="Docs for foo"
              arch=('any')
              make DESTDIR="$pkgdir" install-docs
            }
            package_python-foo() { depends=('python'); }
            """
        )
    )
    assert info.pkgname == ("foo", "foo-docs", "python-foo")
    assert info.pkgbase == "foo"
    assert info.name == "foo"
    assert info.arch == ("x86_64",)  # the assignment inside package_foo-docs() is not run
    assert info.pkgdesc is None
    assert info.functions == {"build", "package_foo", "package_foo-docs", "package_python-foo"}


def test_single_package_may_use_package_underscore_name() -> None:
    info = parse("pkgname=x\npkgver=1\npkgrel=1\npackage_x() { :; }\n")
    assert info.functions == {"package_x"}


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(None, "1.0-1"), ("0", "1.0-1"), ("2", "2:1.0-1"), ("", "1.0-1")],
)
def test_full_version(epoch: str | None, expected: str) -> None:
    info = read("" if epoch is None else f"epoch={epoch}\n")
    assert info.full_version == expected


def test_pkginfo_is_frozen() -> None:
    info = read("")
    with pytest.raises(AttributeError):
        info.pkgver = "2"  # type: ignore[misc]


# --- lexing -----------------------------------------------------------------------------------


def test_comments_blank_lines_and_continuations() -> None:
    info = read(
        """\

        # a comment with an apostrophe: don't, and a "quote
        depends=(a # trailing comment with ( and '
                 b)   # after
        pkgdesc="one \\
        two"
        makedepends=(c \\
                     d)
        license=(x#y)  # '#' inside a word is not a comment
        """
    )
    assert info.depends == ("a", "b")
    assert info.pkgdesc == "one two"
    assert info.makedepends == ("c", "d")
    assert info.license == ("x#y",)


def test_multiline_array_with_comments_and_blank_lines() -> None:
    info = read(
        """\
        source=(
          'first.patch'   # fixes the build

          # 'disabled.patch'
          "second.patch"
          https://example.org/a.tar.gz  # remote
        )
        """
    )
    assert info.source == ("first.patch", "second.patch", "https://example.org/a.tar.gz")
    assert info.local_sources == ("first.patch", "second.patch")


def test_statements_separated_by_semicolons() -> None:
    info = parse("pkgname=a; pkgver=1; pkgrel=3;arch=(any);depends=(x y)\npackage() { :; }\n")
    assert (info.pkgname, info.pkgver, info.pkgrel) == (("a",), "1", "3")
    assert info.depends == ("x", "y")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'single $pkgname \\n'", "single $pkgname \\n"),
        ('"double $pkgname"', "double demo"),
        ('"esc \\" \\$ \\\\ \\` \\n"', 'esc " $ \\ ` \\n'),
        ("bare\\ word", "bare word"),
        ("a'b'\"c\"d", "abcd"),
        ("$'tab\\there\\x41\\'q'", "tab\there" + "A'q"),
        ('$"locale"', "locale"),
        ("''", ""),
        ("cost\\$5", "cost$5"),
        ("'{a,b}'", "{a,b}"),
    ],
)
def test_quoting(value: str, expected: str) -> None:
    assert read(f"pkgdesc={value}\n").pkgdesc == expected


def test_operators_inside_quotes_do_not_split_words() -> None:
    info = read("""depends=('a;b' "c|d" 'e (f)' "g&&h" 'i<j>k')\n""")
    assert info.depends == ("a;b", "c|d", "e (f)", "g&&h", "i<j>k")


# --- expansion --------------------------------------------------------------------------------


def test_variable_expansion() -> None:
    info = parse(
        dedent(
            """\
            _name=foo; pkgname=$_name
            pkgver=1.5
            pkgrel=1
            _url=https://example.org
            source=("$pkgname-$pkgver.tar.gz::${_url}/${pkgname}/v$pkgver.tar.gz"
                    ${pkgname}.service
                    "$_undefined"local.conf)
            pkgdesc="${pkgname^^} $nothing!"
            package() { :; }
            """
        )
    )
    assert info.pkgname == ("foo",)
    assert info.source == (
        "foo-1.5.tar.gz::https://example.org/foo/v1.5.tar.gz",
        "foo.service",
        "local.conf",
    )
    assert info.local_sources == ("foo.service", "local.conf")
    assert info.pkgdesc == "${pkgname^^} !"  # unsupported operator kept as written


@pytest.mark.parametrize(
    "entry",
    ["${pkgver//./_}", "${pkgname%-*}", "${_x:-default}", "${#pkgname}", "$((1 + 2))"],
)
def test_unsupported_expansions_are_kept_not_fatal(entry: str) -> None:
    info = read(f'source=("{entry}.patch")\nsha256sums=(SKIP)\n')
    assert info.source == (f"{entry}.patch",)


def test_unexpandable_versions_are_not_validated() -> None:
    info = parse("pkgname=x\n_v=1-2\npkgver=${_v//-/.}\npkgrel=1\npackage() { :; }\n")
    assert info.pkgver == "${_v//-/.}"


def test_arrays_in_expansion() -> None:
    info = read(
        """\
        _common=(libfoo 'lib bar')
        _words="x y  z"
        depends=("${_common[@]}" extra)
        makedepends=(${_common[@]} $_words "$_words")
        license=("${_common[0]}" "${_common[1]}" "${_common[5]}" "${_common[*]}")
        optdepends=("${_empty[@]}")
        checkdepends=("$_common")
        """
    )
    assert info.depends == ("libfoo", "lib bar", "extra")
    assert info.makedepends == ("libfoo", "lib", "bar", "x", "y", "z", "x y  z")
    assert info.license == ("libfoo", "lib bar", "", "libfoo lib bar")


def test_append_assignments() -> None:
    info = read(
        """\
        depends=(a)
        depends+=(b c)
        depends+=("d e")
        pkgdesc=one
        pkgdesc+=" two"
        makedepends+=(new)
        """
    )
    assert info.depends == ("a", "b", "c", "d e")
    assert info.pkgdesc == "one two"
    assert info.makedepends == ("new",)


def test_last_assignment_wins_and_scalar_value_is_one_word() -> None:
    info = read('_v="1 2"\npkgdesc=$_v\npkgdesc=$_v$_v\n')
    assert info.pkgdesc == "1 21 2"


def test_export_and_declare_assign() -> None:
    info = read("export pkgdesc=exported\ndeclare -a depends=(x y)\n")
    assert info.pkgdesc == "exported"
    assert info.depends == ("x", "y")


def test_prefix_assignment_for_a_command_is_not_kept() -> None:
    info = read("pkgdesc=kept\npkgdesc=temporary true\n")
    assert info.pkgdesc == "kept"


def test_command_substitution_outside_metadata_is_ignored(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    info = read(
        f"""\
        _date=$(touch {marker})
        _other=`touch {marker}`
        CFLAGS+=" $(touch {marker})"
        """
    )
    assert info.pkgver == "1.0"
    assert not marker.exists()  # nothing was run


# --- functions --------------------------------------------------------------------------------


def test_function_syntaxes() -> None:
    info = read(
        """\
        function prepare {
          :
        }
        build ()
        {
          :
        }
        function check() { :; }
        pkgver() ( cd src && git describe )
        _helper(){ echo "}"; }
        """
    )
    assert info.functions == {"prepare", "build", "check", "pkgver", "_helper", "package"}


def test_function_bodies_with_tricky_braces() -> None:
    tab = "\t"
    info = read(
        f"""\
        build() {{
          echo "}} in double quotes" '}} in single' \\}}
          echo ${{pkgdir}} ${{var:-{{}}}} "${{x/\\}}/y}}"
          local n=$(echo "$(printf '%s' '}}')" | tr -d '{{')
          x=`echo }}`
          # a comment with a }} brace and an apostrophe: it's fine
          awk '{{ print $1 }}' file | sed -e 's/{{/(/g'
          cp {{a,b}}.c {{}} dir/
          cat > config <<'EOF'
        }}
        {{ unbalanced
        EOF
          cat <<-EOT
        {tab}{tab}}}
        {tab}EOT
          cat <<"QUOTED" > x
        }}}}}}
        QUOTED
          if [[ -n $x ]]; then {{ echo nested; }}; fi
          case "$x" in
            *.tar) echo tar ;;
            *) echo other ;;
          esac
          (( n << 2 ))
          echo "$((n << 2))" <<< "here string }}"
        }}
        package() {{ :; }}
        after=1
        pkgdesc="still read after the function: $after"
        """
    )
    assert info.functions == {"build", "package"}
    assert info.pkgdesc == "still read after the function: 1"


def test_assignments_inside_functions_are_not_read() -> None:
    info = read("build() {\n  pkgdesc=inside\n  depends=(inner)\n}\n")
    assert info.pkgdesc is None
    assert info.depends == ()


def test_top_level_heredoc_is_skipped() -> None:
    info = read(
        """\
        cat > /dev/null <<EOF
        pkgdesc="this is heredoc text, not an assignment
        EOF
        pkgdesc=real
        """
    )
    assert info.pkgdesc == "real"


# --- other top-level commands -----------------------------------------------------------------


def test_other_commands_are_tolerated() -> None:
    info = read(
        """\
        [[ $CARCH == x86_64 ]] && depends+=(lib32-foo)
        if [[ $CARCH = aarch64 ]]; then
          makedepends+=(arm-tool)
        elif [ -n "$X" ]; then makedepends+=(y); else makedepends+=(z); fi
        case $CARCH in
          x86_64) optdepends=(a) ;;
          *) optdepends=(b) ;;
        esac
        for _f in a b; do source+=("$_f.patch"); done
        while false; do :; done
        { echo grouped; } > /dev/null
        export LANG=C
        set -u
        true "${QUIET:=}"
        depends+=(always)
        """
    )
    assert info.depends == ("always",)
    assert info.makedepends == ()
    assert info.source == ()


def test_conditional_sources_skip_checksum_count() -> None:
    info = read(
        """\
        source=(a.patch)
        if [[ $CARCH == x86_64 ]]; then source+=(b.patch); fi
        sha256sums=(SKIP SKIP)
        """
    )
    assert info.source == ("a.patch",)


def test_uncertainty_propagates_through_variables() -> None:
    info = read(
        """\
        _extra=()
        if true; then _extra+=(x.patch); fi
        source=(a.patch "${_extra[@]}")
        sha256sums=(SKIP SKIP)
        """
    )
    assert info.source == ("a.patch",)


def test_unconditional_assignment_clears_uncertainty() -> None:
    text = "if x; then source=(a b); fi\nsource=(c)\nsha256sums=(1 2)\n"
    assert error(HEADER + text).line == 8


def test_functions_defined_through_eval_are_not_required() -> None:
    info = parse(
        dedent(
            """\
            pkgbase=linux-custom
            pkgname=("$pkgbase" "$pkgbase-headers")
            pkgver=6.1
            pkgrel=1
            _package() { :; }
            _package-headers() { :; }
            for _p in "${pkgname[@]}"; do
              eval "package_$_p() { _package${_p#$pkgbase}; }"
            done
            """
        )
    )
    assert info.pkgname == ("linux-custom", "linux-custom-headers")


def test_brace_expansion_is_not_counted() -> None:
    info = read("source=(fix-{1,2}.patch)\nsha256sums=(SKIP SKIP)\n")
    assert info.source == ("fix-{1,2}.patch",)


# --- sources ----------------------------------------------------------------------------------


def test_remote_and_local_source_classification() -> None:
    info = read(
        """\
        source=(https://example.org/a.tar.gz
                ftp://example.org/b.tar.gz
                "renamed.tar.gz::https://example.org/c.tar.gz"
                "git+https://github.com/x/y.git#tag=v1"
                "y::git+https://github.com/x/y.git"
                file:///tmp/whatever
                svn+https://svn.example.org/trunk
                local.patch
                sub/dir/file.conf
                "mine.patch::orig.patch"
                local.patch)
        """
    )
    assert info.local_sources == ("local.patch", "sub/dir/file.conf", "mine.patch")


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("pkgname=a\npkgdesc='never\nclosed\n", 2, "unterminated single quote (opened here)"),
        ('pkgname=a\n\npkgdesc="never\nclosed\n', 3, "unterminated double quote (opened here)"),
        ("pkgname=a\nsource=(a\n  b\n", 2, "unterminated array for 'source' (opened here)"),
        (
            "pkgname=a\nsource=(a.c\n  b.c\nsha256sums=(x y)\n",
            2,
            "unterminated array for 'source' (opened here)",
        ),
        (
            "pkgname=a\ndepends=(x\nbuild() {\n:\n}\n",
            2,
            "unterminated array for 'depends' (opened here)",
        ),
        (
            "pkgname=a\n\nbuild() {\n  if x; then\n    y\n  fi\n",
            3,
            "unterminated body of function 'build' (started here)",
        ),
        ("build() {\n  echo '}'\n  echo \"{\"\n", 1, "unterminated body of function 'build'"),
        ("package() {\n  cat <<EOF\n}\n", 2, "unterminated here-document (no line 'EOF')"),
        ("x=1\ny=$(echo (\n", 2, "unterminated command substitution"),
        ("x=1\ny=`echo\n", 2, "unterminated backquote"),
        ("x=${y\n", 1, "unterminated ${"),
        ("x=$'abc\n", 1, "unterminated $' quote"),
        ("build()\necho no body\n", 1, "expected '{' to start the body of function 'build'"),
        ("depends=(a | b)\n", 1, "unexpected '|' in the array for 'depends'"),
    ],
)
def test_syntax_errors(text: str, line: int, message: str) -> None:
    err = error(text)
    assert err.line == line
    assert message in err.message
    assert str(err).startswith(f"PKGBUILD line {line}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pkgver=1\npkgrel=1\npackage() { :; }\n", "pkgname is not set"),
        ("pkgname=a\npkgrel=1\npackage() { :; }\n", "pkgver is not set"),
        ("pkgname=a\npkgver=1\npackage() { :; }\n", "pkgrel is not set"),
        ("pkgname=a\npkgver=1\npkgrel=1\nbuild() { :; }\n", "no package() function"),
        ("pkgname=a\npkgver=1\npkgrel=1\npackage_b() { :; }\n", "no package() function"),
        (
            "if x; then pkgver=1; fi\npkgname=a\npkgrel=1\npackage() { :; }\n",
            "pkgver is only set conditionally",
        ),
    ],
)
def test_missing_things_have_no_line(text: str, message: str) -> None:
    err = error(text)
    assert err.message.startswith(message)
    assert err.line is None
    assert str(err) == err.message


@pytest.mark.parametrize(
    ("assignment", "what"),
    [
        ("pkgname=-dash", "pkgname"),
        ("pkgname=.dot", "pkgname"),
        ("pkgname='has space'", "pkgname"),
        ("pkgname=(ok 'not/ok')", "pkgname"),
        ("pkgname=caf\u00e9", "pkgname"),
        ("pkgname=()", "pkgname"),
        ("pkgname=", "pkgname"),
        ("pkgver=1:2", "pkgver"),
        ("pkgver=1-2", "pkgver"),
        ("pkgver=1/2", "pkgver"),
        ("pkgver='1 2'", "pkgver"),
        ("pkgver=", "pkgver"),
        ("pkgrel=1a", "pkgrel"),
        ("pkgrel=1.2.3", "pkgrel"),
        ("pkgrel=.1", "pkgrel"),
        ("pkgrel=-1", "pkgrel"),
        ("epoch=x", "epoch"),
        ("pkgbase=-x", "pkgbase"),
    ],
)
def test_invalid_values_point_at_their_assignment(assignment: str, what: str) -> None:
    text = f"pkgname=ok\npkgver=1\npkgrel=1\n\n{assignment}\npackage() {{ :; }}\n"
    err = error(text)
    assert err.line == 5
    assert what in err.message


@pytest.mark.parametrize(
    "assignment", ["pkgname=a+b@c_d.e-f", "pkgname=0ad", "pkgver=1.0.r12.gabc_d+e", "pkgrel=3.1"]
)
def test_valid_edge_values(assignment: str) -> None:
    read(assignment + "\npackage_a+b@c_d.e-f() { :; }\npackage_0ad() { :; }\n")


def test_split_package_missing_its_function() -> None:
    text = "pkgname=(a b)\npkgver=1\npkgrel=1\npackage_a() { :; }\npackage() { :; }\n"
    err = error(text)
    assert err.line == 1
    assert err.message == "split package 'b' has no package_b() function"


def test_checksum_count_mismatch() -> None:
    err = error(HEADER + "source=(a.c b.c)\n\nsha256sums=('abc')\n")
    assert err.line == 8
    assert err.message == "sha256sums has 1 entries but source has 2"


def test_other_checksum_arrays_are_counted_too() -> None:
    err = error(HEADER + "source=(a.c)\nmd5sums=(x y)\n")
    assert err.line == 7
    assert err.message == "md5sums has 2 entries but source has 1"


def test_checksums_without_sources() -> None:
    assert error(HEADER + "sha256sums=(x)\n").message == "sha256sums has 1 entries but source has 0"


def test_checksums_line_is_the_last_assignment() -> None:
    err = error(HEADER + "source=(a b)\nsha256sums=(x)\nsha256sums+=(y z)\n")
    assert err.line == 8


@pytest.mark.parametrize(
    "entry",
    ["../x", "/etc/passwd", "a/../../b", "~/.ssh/id_rsa", "../up::https://example.org/x", "..", ""],
)
def test_local_source_escaping_the_build_directory(entry: str) -> None:
    err = error(HEADER + f"\nsource=(ok.c\n  '{entry}')\n")
    assert err.line == 7
    assert f"source entry '{entry}'" in err.message


def test_escape_message() -> None:
    err = error(HEADER + "source=('../x')\n")
    assert err.message == "source entry '../x' escapes the build directory"
    assert err.line == 6


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("pkgver=$(date +%Y%m%d)\n", 6),
        ('pkgdesc="built on `date`"\n', 6),
        ('depends=(a\n  "$(cat deps)")\n', 7),
        ("source=(x.c)\nsha256sums=($(sha256sum x.c))\n", 7),
    ],
)
def test_command_substitution_in_metadata_is_rejected(text: str, line: int) -> None:
    err = error(HEADER + text)
    assert err.line == line
    assert "command substitution" in err.message
    assert "statically" in err.message


def test_command_substitution_through_a_variable_is_rejected() -> None:
    err = error(HEADER + "_ver=$(cat VERSION)\n\npkgver=$_ver\n")
    assert err.line == 8
    assert "$_ver" in err.message
    assert "line 6" in err.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("pkgname=a\r\npkgver=1\r\n", 1, "Windows (CRLF) line endings"),
        ("pkgname=a\npkgver=1\x00\n", 2, "NUL byte"),
    ],
)
def test_bad_bytes(text: str, line: int, message: str) -> None:
    err = error(text)
    assert err.line == line
    assert message in err.message


# --- parse_dir --------------------------------------------------------------------------------


def test_parse_dir(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": HELLO_C, "hello.c": "int main(void){}", "Makefile": "all:\n"})
    info = parse_dir(tmp_path)
    assert info == parse(HELLO_C)


def test_parse_dir_with_subdirectory_source_and_custom_filename(tmp_path: Path) -> None:
    text = HEADER + "source=(patches/fix.patch)\n"
    write(tmp_path, {"PKGBUILD.custom": text, "patches/fix.patch": "diff"})
    assert parse_dir(tmp_path, filename="PKGBUILD.custom").local_sources == ("patches/fix.patch",)


def test_parse_dir_without_pkgbuild(tmp_path: Path) -> None:
    with pytest.raises(PkgbuildError) as info:
        parse_dir(tmp_path)
    assert info.value.message == "no PKGBUILD in the build directory"
    assert info.value.line is None


def test_parse_dir_pkgbuild_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "PKGBUILD").mkdir()
    with pytest.raises(PkgbuildError, match="no PKGBUILD"):
        parse_dir(tmp_path)


def test_parse_dir_missing_local_source(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": HELLO_C, "hello.c": ""})
    with pytest.raises(PkgbuildError) as info:
        parse_dir(tmp_path)
    assert info.value.message == "source file 'Makefile' is not in the build directory"
    assert info.value.line == 11


def test_parse_dir_source_symlink_pointing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    build = tmp_path / "build"
    write(build, {"PKGBUILD": HEADER + "\nsource=(link.c)\n"})
    (build / "link.c").symlink_to(outside)
    with pytest.raises(PkgbuildError) as info:
        parse_dir(build)
    assert "points outside the build directory" in info.value.message
    assert info.value.line == 7


def test_parse_dir_source_symlink_inside_is_fine(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": HEADER + "source=(link.c)\n", "real.c": ""})
    (tmp_path / "link.c").symlink_to("real.c")
    assert parse_dir(tmp_path).local_sources == ("link.c",)


def test_parse_dir_source_is_a_directory(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": HEADER + "source=(dir)\n"})
    (tmp_path / "dir").mkdir()
    with pytest.raises(PkgbuildError, match="not a regular file") as info:
        parse_dir(tmp_path)
    assert info.value.line == 6


def test_parse_dir_pkgbuild_symlink_pointing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_text(HEADER)
    build = tmp_path / "build"
    build.mkdir()
    (build / "PKGBUILD").symlink_to(outside)
    with pytest.raises(PkgbuildError, match="points outside"):
        parse_dir(build)


def test_parse_dir_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "PKGBUILD").write_bytes(b"pkgname=\xff\xfe\n")
    with pytest.raises(PkgbuildError, match="not UTF-8"):
        parse_dir(tmp_path)


def test_parse_dir_skips_unexpandable_local_sources(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": HEADER + 'source=("${pkgname%o}.patch" {a,b}.conf)\n'})
    assert parse_dir(tmp_path).source == ("${pkgname%o}.patch", "{a,b}.conf")


def test_parse_dir_remote_sources_need_no_file(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": CARGO})
    assert parse_dir(tmp_path).name == "ripgrep-lite"


def test_parse_dir_reports_parse_errors(tmp_path: Path) -> None:
    write(tmp_path, {"PKGBUILD": "pkgname=a\npkgdesc='open\n"})
    with pytest.raises(PkgbuildError) as info:
        parse_dir(tmp_path)
    assert info.value.line == 2


def test_parse_dir_relative_build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "b", {"PKGBUILD": HELLO_C, "hello.c": "", "Makefile": ""})
    monkeypatch.chdir(tmp_path)
    assert parse_dir(Path("b")).local_sources == ("hello.c", "Makefile")


# --- odds and ends ----------------------------------------------------------------------------


def test_case_patterns_inside_command_substitution() -> None:
    info = read(
        """\
        _arch=$(case $CARCH in x86_64) echo amd64 ;; (aarch64) echo arm64 ;; esac)
        build() {
          local gz="$(case $f in *.gz) echo "$(basename "$f" .gz)" ;; esac)"
        }
        pkgdesc="read after it (ok)"
        """
    )
    assert info.pkgdesc == "read after it (ok)"
    assert "build" in info.functions


def test_indexed_assignment_makes_the_array_uncertain() -> None:
    info = read("source=(a b)\nsource[1]=c\nsha256sums=(x)\n")
    assert info.source == ("a", "b")


def test_negative_and_out_of_range_subscripts() -> None:
    info = read('_a=(x y z)\ndepends=("${_a[-1]}" "${_a[7]}" "${_a[-9]}")\n')
    assert info.depends == ("z", "", "")


def test_scalar_assignment_does_not_word_split() -> None:
    info = read('_v="a   b"\npkgdesc=$_v\ndepends=($_v)\n')
    assert info.pkgdesc == "a   b"
    assert info.depends == ("a", "b")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("_a=(x)\n" + '_a=("${_a[@]}" "${_a[@]}")\n' * 20, "_a grows too large"),
        ("_s=0123456789\n" + "_s=$_s$_s\n" * 30, "_s grows too large"),
        ("_s=0123456789\n" + "_s+=$_s\n" * 30, "_s grows too large"),
        ("_s=x\n_t=" + "$_s" * 30_000 + "\n", "too large to read"),
    ],
)
def test_runaway_growth_is_refused(body: str, message: str) -> None:
    with pytest.raises(PkgbuildError, match=message):
        parse(HEADER + body)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(PkgbuildError, match="too deeply"):
        parse(HEADER + "x=" + "$(" * 5_000 + ")" * 5_000 + "\n")


def test_huge_file_is_refused(tmp_path: Path) -> None:
    text = HEADER + "# padding\n" * 60_000
    with pytest.raises(PkgbuildError, match="larger than 512 KiB"):
        parse(text)
    write(tmp_path, {"PKGBUILD": text})
    with pytest.raises(PkgbuildError, match="larger than 512 KiB"):
        parse_dir(tmp_path)
