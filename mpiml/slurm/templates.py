"""Finding the job templates: shipped with the package, or in folders named by a variable.

The templates live in ``slurm/`` of the source tree; ``mpiml/slurm/templates/`` links to
them, and a wheel carries them as package data, so an installed mpiml finds them with no
variable set.
"""

from __future__ import annotations

import os
from pathlib import Path

from mpiml.errors import ArgumentError

SUFFIX = ".sbatch"
PACKAGE_DIR = Path(__file__).resolve().parent / "templates"


def template_dirs() -> list[Path]:
    """``MPIML_SLURM_TEMPLATES`` (a path list) first, then the templates shipped with mpiml."""
    extra = [Path(p) for p in os.environ.get("MPIML_SLURM_TEMPLATES", "").split(os.pathsep) if p]
    return [d for d in [*extra, PACKAGE_DIR] if d.is_dir()]


def available() -> dict[str, Path]:
    """Template name (file name without ``.sbatch``) -> path; earlier folders win."""
    found = {}
    for directory in reversed(template_dirs()):
        found.update({path.name[: -len(SUFFIX)]: path for path in sorted(directory.glob("*" + SUFFIX))})
    return dict(sorted(found.items()))


def find(name_or_path: str) -> Path:
    """The template called ``name_or_path``, or that file if it exists."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    templates = available()
    name = name_or_path[: -len(SUFFIX)] if name_or_path.endswith(SUFFIX) else name_or_path
    if name in templates:
        return templates[name]
    known = ", ".join(templates) or "none found: give a template file's path"
    raise ArgumentError(f"no template {name_or_path!r} (known: {known})")


def summary(path: Path) -> str:
    """The template's one-line description: its first comment after the shebang."""
    for line in path.read_text().splitlines()[1:4]:
        if line.startswith("# ") and " - " in line:
            return line.split(" - ", 1)[1].strip()
    return ""
