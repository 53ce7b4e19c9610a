"""The ``ades`` command-line interface (click)."""
