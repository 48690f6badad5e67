"""The one place quicconn's version is written (pyproject.toml reads it)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
