"""Command-line interface; see :func:`pela_export.cli.main.main`."""
