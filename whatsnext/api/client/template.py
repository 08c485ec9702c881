"""The one template engine of every formatter: a job's parameters → an argv or a shell line.

:class:`CommandTemplate` is what the CLI, SLURM and RUN:AI formatters use, so the same job gets
the same argument vector wherever it runs:

* **script mode** (``executable`` + ``script``): ``python process.py --key value ...``. ``True``
  is a bare ``--key``; ``False`` and ``None`` leave the key out; a list is ``--key v1 v2``; a dict
  is its JSON text; numbers and strings are their text. Keys must be option-like names
  (letters, digits, ``_``, ``-``, ``.``).
* **template mode**: ``{name}`` placeholders, ``{{``/``}}`` for literal braces. The template is
  split into words with :func:`shlex.split` first, then each placeholder is filled inside its
  word, so a value is never split into more words and never seen by a shell. In a placeholder a
  list or dict is JSON, ``None`` is empty, other values are their text (``{lr:.3f}`` applies a
  format spec). A word ``sh -c``/``bash -c`` runs as a script is filled by the shell rules below
  (unless it is a placeholder alone: then the parameter *is* the script).
* **shell templates** (``shell=True``): the template is a ``/bin/sh`` command line. Each value
  is inserted with :func:`shlex.quote`; a placeholder the shell would not read as a bare word
  (inside quotes, a comment, a here-document...) is refused when the template is given (see
  :mod:`whatsnext.template`).
* **upstream references** (``{upstream.train.result.checkpoint}``, ``{upstream.train.status}``):
  filled from what the job's claim says of its upstream jobs (``upstream``: a list of ``{id,
  name, task, status, result, artifacts}``), by the same rules as a parameter's value. A name no
  upstream job has, a name two of them share, or a key the result lacks is a
  :class:`FormatError` that names it: the job fails, not the worker.

Every error is a :class:`FormatError` that names the template and the placeholder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...template import Placeholder, TemplateError, UpstreamRef, check_template
from .formatters.base import FormatError

__all__ = [
    "SHELLS",
    "CommandTemplate",
    "Upstream",
    "bash_quote",
    "render_text",
    "script_argv",
    "upstream_value",
    "value_text",
]

Upstream = Sequence[Mapping[str, Any]] | None
"""A claimed job's ``upstream``: what each job it depends on left (None: it depends on none)."""

#: Programs whose ``-c`` argument is shell code: a placeholder inside such a word is shell-quoted.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"})
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DASH_C = re.compile(r"^-[A-Za-z]*c[A-Za-z]*$")


def value_text(value: Any, spec: str = "", conversion: str | None = None) -> str:
    """One parameter value as text: JSON for lists and dicts, ``""`` for None, ``str`` otherwise."""
    if conversion == "r":
        value = repr(value)
    elif conversion == "a":
        value = ascii(value)
    elif conversion == "s":
        value = str(value)
    if spec:
        return format(value, spec)
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def bash_quote(text: str) -> str:
    """Quote one word for bash, on one line: :func:`shlex.quote`, or ``$'...'`` with escapes when
    the text has newlines or other control characters (batch scripts keep one command per line)."""
    if text.isprintable():
        return shlex.quote(text)
    out = []
    for ch in text:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "$'" + "".join(out) + "'"


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise FormatError(
            f"parameter name {key!r} cannot be written as an option --NAME: use letters, digits, "
            "'_', '-' and '.' (starting with a letter, digit or '_')"
        )
    return key


def script_argv(executable: str | None, script: str, parameters: Mapping[str, Any]) -> list[str]:
    """``[executable, script, --key, value, ...]`` by the script-mode rules."""
    argv = [executable, script] if executable else [script]
    for key, value in parameters.items():
        flag = f"--{_check_key(key)}"
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv.append(flag)
            argv.extend(value_text(item) for item in value)
        else:
            argv += [flag, value_text(value)]
    return argv


def upstream_value(ref: UpstreamRef, upstream: Upstream) -> Any:
    """The value an upstream reference names: a field of the one upstream job called ``ref.job``
    (a key path into its result). :class:`FormatError` saying what is missing otherwise."""
    if not upstream:
        raise FormatError(f"{ref}: the job has no upstream jobs (it depends on none)")
    found = [job for job in upstream if job.get("name") == ref.job]
    if not found:
        names = ", ".join(sorted({repr(str(job.get("name"))) for job in upstream}))
        raise FormatError(f"{ref}: no upstream job is named {ref.job!r} (its upstream jobs: {names})")
    if len(found) > 1:
        ids = ", ".join(str(job.get("id")) for job in found)
        raise FormatError(
            f"{ref}: {len(found)} upstream jobs are named {ref.job!r} (ids {ids}); give them names of their own"
        )
    job = found[0]
    value = job.get(ref.field)
    for depth, key in enumerate(ref.keys):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isascii() and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            where = "result" + "".join(f"[{k!r}]" for k in ref.keys[: depth + 1])
            why = "it reported no result" if job.get("result") is None else f"its result has no {where}"
            raise FormatError(
                f"{ref}: upstream job {ref.job!r} (id {job.get('id')}, {job.get('status')}): {why}"
            )
    return value


def _fill(
    template: str,
    pieces: Sequence[str | Placeholder],
    values: Mapping[str, Any],
    quote: bool | Callable[[str], str],
    upstream: Upstream = None,
) -> str:
    quoter = shlex.quote if quote is True else (quote or None)
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        if isinstance(piece, UpstreamRef):
            value = upstream_value(piece, upstream)
        elif piece.name in values:
            value = values[piece.name]
        else:
            given = ", ".join(sorted(values)) or "none"
            raise FormatError(
                f"missing parameter {piece.name!r} for template {template!r} (parameters given: {given})"
            )
        try:
            text = value_text(value, piece.spec, piece.conversion)
        except (TypeError, ValueError) as exc:
            raise FormatError(f"cannot render {piece} of template {template!r}: {exc}") from None
        out.append(quoter(text) if quoter is not None else text)
    return "".join(out)


def _parse(template: str, *, shell: bool = False) -> list[str | Placeholder]:
    try:
        return check_template(template, shell=shell)
    except TemplateError as exc:
        raise FormatError(str(exc)) from None


def render_text(template: str, values: Mapping[str, Any], upstream: Upstream = None) -> str:
    """Fill a plain-text template (a path, a name): values as text, unquoted."""
    return _fill(template, _parse(template), values, quote=False, upstream=upstream)


class CommandTemplate:
    """How one formatter turns parameters into a command (see the module's docstring).

    Give ``script`` (with ``executable``, ``None``/``""`` for none) or ``template``. Templates are
    checked here, so a bad one fails when the formatter is made, not on each job.
    """

    def __init__(
        self,
        *,
        executable: str | None = None,
        script: str | None = None,
        template: str | None = None,
        shell: bool = False,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        if (script is None) == (template is None):
            raise ValueError("give either script= (with executable=) or a command template")
        if shell and template is None:
            raise ValueError("shell=True needs a command template")
        self.executable = executable or None
        self.script = script
        self.template = template
        self.shell = shell
        self.defaults = dict(defaults or {})
        self._shell_pieces: list[str | Placeholder] = []
        self._words: list[tuple[str, list[str | Placeholder], bool]] = []
        if template is None:
            return
        if shell:
            self._shell_pieces = _parse(template, shell=True)
            return
        try:
            words = shlex.split(template)
        except ValueError as exc:
            raise FormatError(f"bad template {template!r}: {exc}") from None
        if not words:
            raise FormatError(f"bad template {template!r}: it is empty")
        program = os.path.basename(words[0])
        for k, word in enumerate(words):
            try:
                pieces = _parse(word)
            except FormatError as exc:
                raise FormatError(f"{exc} (a word of template {template!r})") from None
            as_shell = (
                program in SHELLS
                and k >= 1
                and _DASH_C.match(words[k - 1]) is not None
                and any(isinstance(p, Placeholder) for p in pieces)
                and not (len(pieces) == 1 and isinstance(pieces[0], Placeholder))
            )
            if as_shell:
                pieces = _parse(word, shell=True)
            self._words.append((word, pieces, as_shell))

    def parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **parameters}

    def argv(self, parameters: Mapping[str, Any], upstream: Upstream = None) -> list[str]:
        """The argument vector (a shell template: ``["/bin/sh", "-c", line]``); ``upstream`` (the
        claimed job's) fills upstream references."""
        values = self.parameters(parameters)
        if self.script is not None:
            return script_argv(self.executable, self.script, values)
        if self.shell:
            return ["/bin/sh", "-c", self.shell_line(values, upstream=upstream)]
        return [
            _fill(word, pieces, values, quote=as_shell, upstream=upstream)
            for word, pieces, as_shell in self._words
        ]

    def shell_line(
        self,
        parameters: Mapping[str, Any],
        quote: Callable[[str], str] = shlex.quote,
        upstream: Upstream = None,
    ) -> str:
        """The command as a shell runs it: the filled shell template, or the quoted argv.

        ``quote`` quotes each value (:func:`bash_quote` keeps a bash script's command on one line).
        """
        values = self.parameters(parameters)
        if self.shell:
            assert self.template is not None
            return _fill(self.template, self._shell_pieces, values, quote=quote, upstream=upstream)
        return " ".join(quote(word) for word in self.argv(values, upstream))
