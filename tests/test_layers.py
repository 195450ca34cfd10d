"""The package's layering: imports point down, and every module imports on its own.

Layers, top to bottom: ``mpiml.cli`` (the only one that knows argparse) -> the jobs
(``sgd``, ``parallel``, ``mf``, ``train``) -> ``collectives``, ``perf``, ``data`` ->
``runtime`` -> ``mpiml.errors``. Checked here from the source (an AST scan of every file)
and by importing each module alone in a fresh process, which finds import cycles.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mpiml"
# ``python -m mpiml`` needs mpiml/__main__.py: it is the command line's entry, part of that layer.
CLI_ENTRIES = {PACKAGE / "__main__.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[str]:
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (also inside functions), as absolute names."""
    names = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_only_the_command_line_imports_argparse_or_the_cli():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "cli") or path in CLI_ENTRIES:
            continue
        bad = sorted(n for n in imported(path) if n == "argparse" or n == "mpiml.cli" or n.startswith("mpiml.cli."))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    assert not offenders, offenders


def test_data_and_runtime_do_not_import_the_layers_above_them():
    above = {"data": ("mpiml.collectives", "mpiml.perf", "mpiml.sgd", "mpiml.parallel", "mpiml.mf", "mpiml.train"),
             "runtime": ("mpiml.collectives", "mpiml.perf", "mpiml.sgd", "mpiml.parallel", "mpiml.mf", "mpiml.train",
                         "mpiml.data", "mpiml.slurm")}
    offenders = []
    for layer, forbidden in above.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            bad = sorted(n for n in imported(path) if any(n == f or n.startswith(f + ".") for f in forbidden))
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    errors = PACKAGE / "errors.py"
    assert not [n for n in imported(errors) if n.startswith("mpiml")], "mpiml.errors is the bottom layer"
    assert not offenders, offenders


def test_collective_errors_are_marked_where_they_are_made():
    # `err.collective = True` after construction is how a rank ends up waiting for the others.
    found = [f"{path.relative_to(ROOT)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if "collective = True" in line]
    assert all(place.startswith("mpiml/errors.py:") for place in found), found


# Each module is imported in its own process, forked from one that has loaded the third-party
# libraries and the package's own __init__ (which every `import mpiml.x` runs first) but no other
# part of mpiml: the import cannot lean on a module some other import loaded first, as it could in
# one shared interpreter, and a cycle fails just as in a fresh `python -c`.
# MPI is not initialized (no module may need it at import).
CHILD = r"""
import importlib, json, os, sys, traceback
import mpi4py
mpi4py.rc.initialize = mpi4py.rc.finalize = False
import mpi4py.MPI, numpy, scipy.linalg, scipy.sparse, scipy.special, scipy.io, threadpoolctl
try:
    import numba
except ImportError:
    pass
assert not [m for m in sys.modules if m == "mpiml" or m.startswith("mpiml.")]
# `import mpiml.x` in a fresh process runs the package's __init__ to its end before it looks at x, and that run
# is the same whatever x is: doing it once here, before forking, changes no child's import (and a failure in it
# fails the test as it would fail every child); it spares ~160 children the same 33 modules.
import mpiml
names, workers, running, failed = json.loads(sys.argv[1]), int(sys.argv[2]), {}, {}
def start(name):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    running[pid] = (name, read)
def finish():
    pid, status = os.wait()
    name, read = running.pop(pid)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode(errors="replace")
    if status != 0:
        failed[name] = text or f"exit status {status}"
for name in names:
    if len(running) >= workers:
        finish()
    start(name)
while running:
    finish()
print(json.dumps(failed))
"""


def test_every_module_imports_alone_in_a_fresh_process():
    names = modules()
    assert "mpiml.mf.estimator" in names and "mpiml.cli.main" in names
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(names), "4"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name}:\n{text}" for name, text in failed.items())
