"""Render a job script from a template: a pure function of text and validated values.

A template (see ``slurm/*.sbatch``) is a complete, submittable batch script. Rendering

- rewrites its ``#SBATCH --name=value`` lines with the given options (a template's own
  value is the default; its trailing comment is kept), adding lines for options the
  template does not have after its last ``#SBATCH`` line;
- replaces the line ``MPIML_COMMAND=(...)`` with the given command, one shell word per
  argument;
- optionally bakes a Python environment into the line ``MPIML_VENV=${MPIML_VENV:-...}``.

Every substituted value is quoted with :func:`shlex.quote`. In a bash array assignment
a quoted word is literal text, so no argument can run code; sbatch's own parser of
``#SBATCH`` lines understands the same single quotes, so a value reaches Slurm unchanged
while bash sees only a comment.
"""

from __future__ import annotations

import re
import shlex

from mpiml.errors import ArgumentError
from mpiml.slurm.options import check_option, check_signal_before_limit

DIRECTIVE = "#SBATCH"
_COMMAND_LINE = re.compile(r"^MPIML_COMMAND=\(.*\)[ \t]*(#.*)?$", re.M)
_VENV_LINE = re.compile(r"^MPIML_VENV=\$\{MPIML_VENV:-.*\}[ \t]*(#.*)?$", re.M)


def sbatch_line(name: str, value: str | None) -> str:
    """One ``#SBATCH`` directive, the value shell-quoted (``None``: a flag)."""
    return f"{DIRECTIVE} --{name}" if value is None else f"{DIRECTIVE} --{name}={shlex.quote(value)}"


def checked_options(options: dict) -> dict:
    """``options`` (name -> value or None) with every value validated."""
    checked = {name: check_option(name, value) for name, value in options.items()}
    check_signal_before_limit(checked)
    return checked


def sbatch_header(options: dict) -> str:
    """The ``#SBATCH`` lines for ``options`` (name -> value or None), validated, in order."""
    return "\n".join(sbatch_line(name, value) for name, value in checked_options(options).items())


def parse_directive(line: str):
    """``(name, value, comment_column)`` of a ``#SBATCH --name[=value]`` line, else None."""
    if not line.startswith(DIRECTIVE + " "):
        return None
    body = line[len(DIRECTIVE):]
    words = shlex.split(body, comments=True)
    if len(words) != 1 or not words[0].startswith("--"):
        raise ArgumentError(f"template line {line!r}: write exactly one long option per #SBATCH line "
                            "(--name=value)")
    name, sep, value = words[0][2:].partition("=")
    hash_at = _comment_column(line)
    return name, (value if sep else None), hash_at


def _comment_column(line: str):
    """Where a trailing ``# comment`` starts (outside quotes), or None."""
    quote = None
    for index, char in enumerate(line[len(DIRECTIVE):]):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return index + len(DIRECTIVE)
    return None


def template_options(text: str) -> dict:
    """The options a template's ``#SBATCH`` lines set (its defaults)."""
    found = {}
    for line in text.splitlines():
        parsed = parse_directive(line)
        if parsed:
            if parsed[0] in found:
                raise ArgumentError(f"template sets --{parsed[0]} twice")
            found[parsed[0]] = parsed[1]
    return found


def command_line(command) -> str:
    """``MPIML_COMMAND=(...)``: a bash array holding ``command``'s words literally."""
    words = [str(word) for word in command]
    if not words:
        raise ArgumentError("the command is empty (give it after --)")
    if any("\0" in word for word in words):
        raise ArgumentError("a command argument contains a NUL byte")
    return "MPIML_COMMAND=(" + " ".join(shlex.quote(word) for word in words) + ")"


def render_script(template: str, options: dict | None = None, command=None, venv: str | None = None) -> str:
    """The job script: ``template`` with ``options``, ``command`` and ``venv`` substituted.

    Parameters
    ----------
    template : str
        Text of a template: ``#SBATCH --name=value`` lines (long options only) and one
        ``MPIML_COMMAND=(...)`` line.
    options : dict, optional
        sbatch long option name (without ``--``) -> value, or None for a flag. They
        override the template's values; new ones are added after its last ``#SBATCH`` line.
    command : sequence of str, optional
        The program each rank runs; None keeps the template's.
    venv : str, optional
        A virtual environment directory the job activates unless ``MPIML_VENV`` is set
        at submission.

    Returns
    -------
    str
        The script. Pure: the same arguments give the same text.

    Raises
    ------
    ArgumentError
        An invalid value (time format, count, control character, ...) or a template
        without the lines to substitute.
    """
    options = dict(options or {})
    merged = {**template_options(template), **options}
    header = checked_options(merged)

    active = template_options(template)
    lines = template.split("\n")
    last_directive = None
    for index, line in enumerate(lines):
        parsed = parse_directive(line)
        if parsed is None and line.startswith("#" + DIRECTIVE + " "):
            # a switched-off "##SBATCH --name=PLACEHOLDER" line: a given value replaces it
            placeholder = parse_directive(line[1:])
            last_directive = index
            if placeholder[0] in options and placeholder[0] not in active and placeholder[0] in header:
                name, _, column = placeholder
                lines[index] = _with_comment(sbatch_line(name, header.pop(name)), line,
                                             None if column is None else column + 1)
            continue
        if parsed is None:
            continue
        name, _, column = parsed
        last_directive = index
        lines[index] = _with_comment(sbatch_line(name, header.pop(name)), line, column)
    if last_directive is None:
        raise ArgumentError("the template has no #SBATCH lines")
    lines[last_directive + 1:last_directive + 1] = [sbatch_line(name, value) for name, value in header.items()]
    text = "\n".join(lines)

    if command is not None:
        text = _replace_one(text, _COMMAND_LINE, command_line(command), "MPIML_COMMAND=(...)")
    if venv is not None:
        line = "MPIML_VENV=${MPIML_VENV:-" + shlex.quote(str(check_option("venv", venv))) + "}"
        text = _replace_one(text, _VENV_LINE, line, "MPIML_VENV=${MPIML_VENV:-...}")
    return text


def _with_comment(directive: str, line: str, column) -> str:
    """``directive`` followed by ``line``'s trailing comment, at the same column where possible."""
    if column is None:
        return directive
    return f"{directive:<{column - 1}} {line[column:]}"


def _replace_one(text: str, pattern, replacement: str, what: str) -> str:
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        raise ArgumentError(f"the template must have exactly one {what} line, found {len(matches)}")
    match = matches[0]
    comment = match.group(1)
    new = replacement + (f"  {comment}" if comment else "")
    return text[:match.start()] + new + text[match.end():]
