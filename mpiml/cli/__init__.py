"""The ``mpiml`` command: one module per subcommand, each with ``main(argv=None)``."""
