"""vestis: fashion product photos to labels and neighbours.

``vestis.load(...)`` opens a model, ``vestis.train(...)`` trains one; both return a :class:`vestis.Model`
(see :mod:`vestis.api`). Importing ``vestis`` itself imports nothing heavy."""

__version__ = "0.1.0"
__all__ = ["Model", "load", "soup", "train", "__version__"]


def __getattr__(name: str):
    if name == "train":  # the training subpackage, callable as the API's train()
        import vestis.train

        return vestis.train
    if name in ("Model", "load", "soup", "Embedded"):
        from vestis import api

        return getattr(api, name)
    raise AttributeError(f"module 'vestis' has no attribute {name!r}")
