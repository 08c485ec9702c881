"""Command templates: parsing and the checks every place that accepts a template runs.

A template is text with ``{name}`` placeholders (``{name:.3f}`` takes a format spec as in
``str.format``); ``{{`` and ``}}`` stand for literal braces, so ``awk '{{print $1}}'`` works.
Placeholders name parameters: no positional ``{}``/``{0}``, no ``{a.b}`` or ``{a[0]}``, with one
exception: an *upstream reference* ``{upstream.NAME.FIELD}`` takes a value of the upstream job
named NAME (a job this one depends on) when the job runs: FIELD is ``id``, ``name``, ``task``,
``status`` or ``result``, and ``result`` may go on with keys into the result
(``{upstream.train.result.checkpoint}``, a list item by its index: ``result.scores.0``). A name
or key with a dot in it goes in brackets: ``{upstream[train.v2].result[best.loss]}``. Upstream
references are not parameters: :func:`placeholders` leaves them out.

A *shell* template is run by ``/bin/sh``. Each value is inserted shell-quoted, which is only safe
where the shell reads a bare word: inside quotes, after a backslash or ``$``, in a comment, in
backticks, in ``${...}`` or in a here-document the quoting would be undone or ignored, and a value
could end the quotes and run commands. :func:`check_template` refuses such templates, naming the
placeholder and the context. This module has no client or server dependencies: the worker checks
a template when it starts, and the server can check one when it is stored.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

__all__ = [
    "UPSTREAM_FIELDS",
    "Placeholder",
    "TemplateError",
    "UpstreamRef",
    "check_shell_template",
    "check_template",
    "parse_template",
    "placeholders",
    "upstream_refs",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UPSTREAM = "upstream"
UPSTREAM_FIELDS = ("id", "name", "task", "status", "result")
"""What an upstream reference may take of an upstream job (``result`` with keys into it)."""
_SEGMENT = re.compile(r"\.([^.\[\]]+)|\[([^\[\]]+)\]")
_WORD_START = frozenset(" \t\n;&|()<>")


class TemplateError(ValueError):
    """A template that cannot be used (bad syntax, a bad placeholder, an unsafe shell context)."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``{name[:spec]}`` or ``{name!conv}`` field of a template."""

    name: str
    spec: str = ""
    conversion: str | None = None

    def __str__(self) -> str:
        conv = f"!{self.conversion}" if self.conversion else ""
        spec = f":{self.spec}" if self.spec else ""
        return "{" + self.name + conv + spec + "}"


@dataclass(frozen=True, slots=True)
class UpstreamRef(Placeholder):
    """An ``{upstream.NAME.FIELD[.KEY...]}`` field: a value of the upstream job named ``job``
    (``name`` holds the whole reference as written)."""

    job: str = ""
    field: str = "result"
    keys: tuple[str, ...] = ()


Piece = str | Placeholder


def parse_template(template: str) -> list[Piece]:
    """The template as literal text (braces unescaped) and placeholders, in order."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"bad template {template!r}: {exc}") from None
    pieces: list[Piece] = []
    for literal, field, spec, conversion in parsed:
        if literal:
            pieces.append(literal)
        if field is None:
            continue
        if field.startswith((UPSTREAM + ".", UPSTREAM + "[")):
            pieces.append(_upstream_ref(template, field, spec or "", conversion))
            continue
        if not _NAME.match(field):
            if field == "" or field.isdigit():
                hint = "name it after a parameter, e.g. {lr}"
            else:
                hint = "only plain parameter names are allowed (no attributes or indexes)"
            raise TemplateError(f"bad placeholder {{{field}}} in template {template!r}: {hint}")
        if spec and ("{" in spec or "}" in spec):
            raise TemplateError(f"nested placeholder in {{{field}:{spec}}} of template {template!r}")
        if conversion not in (None, "s", "r", "a"):
            raise TemplateError(f"bad conversion !{conversion} in template {template!r}")
        pieces.append(Placeholder(field, spec or "", conversion))
    return pieces


def _upstream_ref(template: str, field: str, spec: str, conversion: str | None) -> UpstreamRef:
    """``upstream.NAME.FIELD[.KEY...]`` (any part may be ``[...]`` instead of ``.part``)."""
    parts: list[str] = []
    pos, rest = 0, field[len(UPSTREAM) :]
    while pos < len(rest):
        match = _SEGMENT.match(rest, pos)
        if match is None:
            parts = []
            break
        parts.append(match.group(1) if match.group(1) is not None else match.group(2))
        pos = match.end()
    fields = ", ".join(UPSTREAM_FIELDS)
    if len(parts) < 2:
        raise TemplateError(
            f"bad upstream reference {{{field}}} in template {template!r}: write {{upstream.NAME.FIELD}} "
            f"(NAME: the upstream job's name, FIELD: one of {fields}; a name with a dot in brackets: "
            "{upstream[NAME].FIELD})"
        )
    job, what, *keys = parts
    if what not in UPSTREAM_FIELDS:
        raise TemplateError(
            f"bad upstream reference {{{field}}} in template {template!r}: {what!r} is not one of {fields}"
        )
    if keys and what != "result":
        raise TemplateError(
            f"bad upstream reference {{{field}}} in template {template!r}: only result has keys "
            f"(e.g. {{upstream.{job}.result.KEY}})"
        )
    if spec and ("{" in spec or "}" in spec):
        raise TemplateError(f"nested placeholder in {{{field}:{spec}}} of template {template!r}")
    if conversion not in (None, "s", "r", "a"):
        raise TemplateError(f"bad conversion !{conversion} in template {template!r}")
    return UpstreamRef(field, spec, conversion, job=job, field=what, keys=tuple(keys))


def placeholders(template: str) -> list[str]:
    """The parameter names a template uses, in order of first use (upstream references are not
    parameters: they are left out)."""
    seen: dict[str, None] = {}
    for piece in parse_template(template):
        if isinstance(piece, Placeholder) and not isinstance(piece, UpstreamRef):
            seen.setdefault(piece.name, None)
    return list(seen)


def upstream_refs(template: str) -> list[UpstreamRef]:
    """The upstream references of a template, in order."""
    return [piece for piece in parse_template(template) if isinstance(piece, UpstreamRef)]


def check_template(template: str, *, shell: bool = False) -> list[Piece]:
    """Parse ``template``; when ``shell``, also refuse placeholders the shell would not read as a
    bare word. Raises :class:`TemplateError` with a message that names the placeholder."""
    pieces = parse_template(template)
    if shell:
        _check_shell(template, pieces)
    return pieces


def check_shell_template(template: str) -> None:
    """Raise :class:`TemplateError` unless every placeholder of a shell template stands unquoted."""
    check_template(template, shell=True)


# ---------------------------------------------------------------- the shell scan


def _refuse(template: str, ph: Placeholder, where: str, advice: str) -> TemplateError:
    return TemplateError(
        f"placeholder {ph} is {where} in shell template {template!r}: {advice}. Values are "
        "shell-quoted when they are inserted, so write the placeholder unquoted, as a word of its own "
        "or part of one (e.g. echo {m} or --out=dir/{m})"
    )


_DOLLAR_OPENS = {"(": "cmd", "{": "brace"}
"""What ``$`` opens when this follows it: ``$( ... )`` a command substitution, ``${ ... }`` an expansion."""
_CLOSED_BY = {"brace": "}", "bq": "`"}
"""The contexts inside which only their closing character (and backslash escapes) matter."""


def _check_shell(template: str, pieces: list[Piece]) -> None:
    """Walk the template as the shell would, tracking quotes, substitutions, comments, heredocs."""
    items: list[str | Placeholder] = []
    for piece in pieces:
        if isinstance(piece, Placeholder):
            items.append(piece)
        else:
            items.extend(piece)

    quoting = "a value could end the quotes and run commands"
    # Context stack: "sh" (plain shell words), "dq" (double quotes), "cmd" ($( ... )),
    # "paren" (a ( ... ) group), "brace" (${ ... }), "bq" (backticks).
    stack = ["sh"]
    heredocs: list[tuple[str, bool]] = []  # (delimiter, strip leading tabs) waiting for a newline
    i, n = 0, len(items)

    def prev_char(k: int) -> str | None:
        if k <= 0:
            return None
        before = items[k - 1]
        return before if isinstance(before, str) else None

    while i < n:
        item = items[i]
        top = stack[-1]
        if isinstance(item, Placeholder):
            if top == "dq":
                raise _refuse(template, item, "inside double quotes", quoting)
            if top == "bq":
                raise _refuse(template, item, "inside backticks", "use $( ... ) instead")
            if top == "brace":
                raise _refuse(template, item, "inside ${ ... }", quoting)
            before = prev_char(i)
            if before == "$":
                raise _refuse(template, item, "right after '$'", "the shell would read $'...' escapes")
            i += 1
            continue
        ch = item
        nxt = items[i + 1] if i + 1 < n else None
        if top in _CLOSED_BY:
            if ch == _CLOSED_BY[top]:
                stack.pop()
            elif ch == "\\":
                i += 1
            i += 1
            continue
        if ch == "$" and isinstance(nxt, str) and nxt in _DOLLAR_OPENS:  # in double quotes or not
            stack.append(_DOLLAR_OPENS[nxt])
            i += 2
            continue
        if top == "dq":
            if ch == "\\":
                if isinstance(nxt, Placeholder):
                    raise _refuse(template, nxt, "inside double quotes", quoting)
                i += 2
                continue
            if ch == '"':
                stack.pop()
            elif ch == "`":
                stack.append("bq")
            i += 1
            continue
        # plain shell words ("sh", "cmd", "paren")
        if ch == "\\":
            if isinstance(nxt, Placeholder):
                raise _refuse(
                    template, nxt, "right after a backslash", "the backslash would escape the value's quote"
                )
            i += 2
            continue
        if ch == "'":
            quote_kind = "inside $'...' quotes" if prev_char(i) == "$" else "inside single quotes"
            j = i + 1
            while j < n and items[j] != "'":
                inner = items[j]
                if isinstance(inner, Placeholder):
                    raise _refuse(template, inner, quote_kind, quoting)
                if quote_kind.startswith("inside $") and items[j] == "\\":
                    j += 1
                j += 1
            i = j + 1
            continue
        if ch == '"':
            stack.append("dq")
        elif ch == "`":
            stack.append("bq")
        elif ch == "(":
            stack.append("paren")
        elif ch == ")" and top in ("cmd", "paren"):
            stack.pop()
        elif ch == "#" and (i == 0 or prev_char(i) in _WORD_START):
            j = i
            while j < n and items[j] != "\n":
                inner = items[j]
                if isinstance(inner, Placeholder):
                    raise _refuse(template, inner, "inside a comment", "a value with a newline would run")
                j += 1
            i = j
            continue
        elif ch == "<" and nxt == "<" and (i + 2 >= n or items[i + 2] != "<") and prev_char(i) != "<":
            i = _read_heredoc_word(template, items, i + 2, heredocs)
            continue
        elif ch == "\n" and heredocs:
            i = _skip_heredoc_bodies(template, items, i + 1, heredocs)
            heredocs = []
            continue
        i += 1


def _read_heredoc_word(
    template: str, items: list[str | Placeholder], i: int, heredocs: list[tuple[str, bool]]
) -> int:
    strip_tabs = i < len(items) and items[i] == "-"
    if strip_tabs:
        i += 1
    while i < len(items) and items[i] in (" ", "\t"):
        i += 1
    word: list[str] = []
    quote: str | None = None
    while i < len(items):
        item = items[i]
        if isinstance(item, Placeholder):
            raise _refuse(template, item, "in a here-document delimiter", "write the delimiter literally")
        if quote is None and (item in _WORD_START):
            break
        if item in ("'", '"') and (quote is None or quote == item):
            quote = None if quote else item
        elif item != "\\":
            word.append(item)
        i += 1
    heredocs.append(("".join(word), strip_tabs))
    return i


def _skip_heredoc_bodies(
    template: str, items: list[str | Placeholder], i: int, heredocs: list[tuple[str, bool]]
) -> int:
    for delimiter, strip_tabs in heredocs:
        while i < len(items):
            line: list[str] = []
            while i < len(items) and items[i] != "\n":
                item = items[i]
                if isinstance(item, Placeholder):
                    raise _refuse(
                        template,
                        item,
                        "inside a here-document",
                        "the shell does not read quotes there; pass the value as an argument or "
                        "through a variable instead",
                    )
                line.append(item)
                i += 1
            i += 1  # the newline
            text = "".join(line)
            if (text.lstrip("\t") if strip_tabs else text) == delimiter:
                break
    return i
