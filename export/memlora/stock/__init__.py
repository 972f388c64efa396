"""Stock runtimes: what a phone app's unmodified runtime needs to open a memlora bundle, and the
host check that it really does.

The runtimes (``memlora.stock.runtimes`` says which files each one opens):

* ExecuTorch's ``TextLLMRunner`` (Android ``LlmModule``, iOS ``TextRunner``): reads the runner's
  metadata from constant methods in the ``.pte`` (:mod:`memlora.stock.executorch_meta`).
* ONNX Runtime GenAI (``og.Model(folder)`` + ``og.Adapters``): reads ``genai_config.json`` and a
  tokenizer beside it (:mod:`memlora.stock.genai_config`, :mod:`memlora.stock.tokenizer_config`).
* Core ML: no stock LLM runner; the manifest lists the names, shapes and functions a Swift engine
  drives (:mod:`memlora.stock.runtimes`).

The context every artifact is sized to comes from the bundle's own prompts
(:mod:`memlora.stock.context`); :mod:`memlora.stock.check` runs each artifact in its stock runtime
against ``conformance.json``.
"""
