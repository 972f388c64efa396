"""MemLoRA-V: small vision-language models (SVLMs) with a fourth, ``vqa``, adapter.

An SVLM is exported as three graphs, as every runtime anchor does (ExecuTorch's
``MultimodalRunner``, ONNX Runtime GenAI, Apple's FastVLM): a fixed-shape **vision encoder**
(uint8 pixels -> image embeddings, rescale/normalise and projector inside), a **token
embedding** (ids -> embeddings, Gemma's sqrt(D) scale included) and a **text decoder that
takes embeddings** (with the KV cache, LoRA on it).

* ``families``: the SVLM families by ``model_type`` and what differs between them.
* ``presets``: tiny seeded SVLM folders with four language-model adapters (no downloads).
* ``preprocess``: the preprocessing contract (``vision/preprocess.json``) and its NumPy reference.
* ``images``: a seeded generator of VQA images with single-word answers.
* ``model_io``: checks of an SVLM folder and its adapters before weights are loaded.
* ``export``: ``memlora export`` for an SVLM (ONNX and ExecuTorch), with parity per graph.
"""
