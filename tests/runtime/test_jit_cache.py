"""Compiled kernels share numba's on-disk cache safely between processes compiling at once.

numba names a new cache entry by reading the cache's index, taking the first free number
and writing the index back. Ranks of a job started on a cold cache compile at the same
moment; without a lock between processes two of them could take the same number for two
different signatures, and a later run would then load one signature's machine code for the
other's arguments ("can't unbox array from PyObject"). These tests widen that window on
purpose and check that every signature keeps its own entry and still computes the right
thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("numba")
pytestmark = pytest.mark.skipif(bool(os.environ.get("NUMBA_CACHE_DIR")),
                                reason="the cache is looked for beside the module")

KERNEL_SOURCE = textwrap.dedent(
    """
    from mpiml.runtime.jit import kernel


    @kernel
    def twice_plus_one(x):
        return x * 2 + 1
    """
)

# A rank of a cold-cache job: wait for the others, then compile one signature while the
# read-then-write of numba's index is stretched by 0.3 s.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from numba.core import caching

    save_index = caching.IndexDataCacheFile._save_index

    def slow_save_index(self, overloads):
        time.sleep(0.3)
        save_index(self, overloads)

    caching.IndexDataCacheFile._save_index = slow_save_index
    sys.path.insert(0, sys.argv[1])
    import jit_race_probe

    open(os.path.join(sys.argv[1], "ready-" + sys.argv[2]), "w").close()
    go = os.path.join(sys.argv[1], "go")
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    got = jit_race_probe.twice_plus_one(np.arange(3, dtype=sys.argv[2]))
    assert got.tolist() == [1, 3, 5], got
    """
)


def _wait_for(paths, procs, seconds=60):
    deadline = time.monotonic() + seconds
    while not all(os.path.exists(p) for p in paths):
        if any(proc.poll() not in (None, 0) for proc in procs) or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_two_processes_compiling_two_signatures_at_once_keep_both_in_the_cache(tmp_path):
    (tmp_path / "jit_race_probe.py").write_text(KERNEL_SOURCE)
    dtypes = ("float64", "int32")
    env = {**os.environ, "MPIML_KERNELS": "numba"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), dt], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for dt in dtypes]
    try:
        ready = _wait_for([tmp_path / f"ready-{dt}" for dt in dtypes], procs)
        (tmp_path / "go").touch()
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert ready, outputs
    assert [proc.returncode for proc in procs] == [0, 0], outputs

    entries = sorted(p.name for p in (tmp_path / "__pycache__").glob("jit_race_probe.twice_plus_one-*.nbc"))
    assert len(entries) == 2, entries  # one cache entry per signature, neither overwritten

    # A later run loads both signatures from the cache and each computes its own result.
    check = textwrap.dedent(
        """
        import sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        import jit_race_probe
        for dt in sys.argv[2:]:
            got = jit_race_probe.twice_plus_one(np.arange(3, dtype=dt))
            assert got.dtype.kind == np.dtype(dt).kind and got.tolist() == [1, 3, 5], (dt, got)
        """
    )
    later = subprocess.run([sys.executable, "-c", check, str(tmp_path), *dtypes], env=env,
                           capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stdout + later.stderr


def test_a_compile_waits_while_another_process_holds_the_kernels_lock(tmp_path):
    import numba

    numba.njit(lambda v: v + 1)(1)   # numba's start-up before the holder starts: the call below is the compile alone

    (tmp_path / "jit_race_probe.py").write_text(KERNEL_SOURCE)
    sys.path.insert(0, str(tmp_path))
    try:
        import jit_race_probe

        # the kernel's lock sits beside numba's index of it (what jit._locked derives; nothing compiled yet)
        index = numba.njit(cache=True)(jit_race_probe.twice_plus_one.py_func)._cache._cache_file._index_path
        lock_path = index + ".lock"
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(
                """
                import fcntl, sys, time
                with open(sys.argv[1], "a") as f:
                    fcntl.flock(f, fcntl.LOCK_EX)
                    print("held", flush=True)
                    time.sleep(1.0)
                    print(time.monotonic(), flush=True)   # then closing the file lets the lock go
                """
            ), lock_path],
            stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            got = jit_race_probe.twice_plus_one(np.arange(3.0))
            done = time.monotonic()
            released = float(holder.stdout.readline())
            assert got.tolist() == [1.0, 3.0, 5.0]
            assert done >= released, (done, released)  # the compile finished only after the holder let go
            assert holder.wait(timeout=60) == 0
        finally:
            holder.kill()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("jit_race_probe", None)
