"""The inference engine: one image-batch loader, one function from batches to per-head probabilities and
embeddings, and the runtimes (PyTorch, ONNX Runtime) behind it.

Below ``train``, ``evaluate``, ``predict``, the index and the server; above ``data`` and ``models``.
Modules without torch: ``loader``, ``infer``, ``cache``, ``ort_runner``; with torch: ``graph``,
``torch_runner``, ``features``, ``export``."""
