"""Visual search and catalogue audit: a Faiss index of a model's embeddings, with metadata filters.

>>> from vestis.index import Index, build_index
>>> index, report = build_index("styles.csv", "idx/", images="images/")        # the bundled model
>>> index = Index.open("idx/")
>>> index.search(["photo.jpg", "shop/"], k=10, where={"gender": ["Women"]})     # the `vestis search --json` lines
>>> index.search_vectors(vectors, k=10)                                          # rows, no model needed
>>> with Index.edit("idx/") as index:                  # read-modify-write under the directory's writers' lock
...     index.remove([15970])"""

from vestis.index.build import add_to_index, build_index, open_model, remove_from_index, search
from vestis.index.store import Index, IndexConflict, IndexFileError, IndexLocked, ModelMismatch, parse_where

__all__ = [
    "Index",
    "IndexConflict",
    "IndexFileError",
    "IndexLocked",
    "ModelMismatch",
    "add_to_index",
    "build_index",
    "open_model",
    "parse_where",
    "remove_from_index",
    "search",
]
