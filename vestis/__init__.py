"""vestis: fashion product photos to labels and neighbours."""

__version__ = "0.1.0"
