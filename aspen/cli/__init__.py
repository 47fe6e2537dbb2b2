"""The ``aspen`` command line (Typer + Rich)."""
