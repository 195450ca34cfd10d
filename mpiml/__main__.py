"""``python -m mpiml``: the same as the ``mpiml`` command."""

from mpiml.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
