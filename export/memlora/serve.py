"""A bundle's model as a JSON-lines process: the host ``Engine`` of the phone ports' cores.

``python -m memlora.serve BUNDLE --backend onnx`` opens the bundle (see :func:`memlora.runtime.open_bundle`)
and answers one JSON request per stdin line with one JSON line on stdout; nothing else is ever
written to stdout (logs go to stderr). No network. The Android/iOS cores run their memory loop
against it on a machine without a phone, so the same exported model generates for both the
Kotlin loop and the Python one.

Requests (``id`` is echoed back):

* ``{"op": "info"}`` -> ``{"adapters", "backend", "artifact", "max_seq_len", "eos_ids", "chat_format"}``
* ``{"op": "generate", "adapter": "extract", "prompt": "...", "settings": {"max_new_tokens", "temperature",
  "top_p", "seed", "stop", "eos_ids"}}`` -> ``{"text", "ids", "pieces", "prompt_tokens", "stopped_by",
  "prefill_ms", "decode_ms"}``; ``eos_ids`` null means the bundle's set (config eos plus single-token
  stop strings, as ``memlora locomo`` uses); ``pieces`` are the streamed text pieces in order.
* ``{"op": "encode", "text": "..."}`` -> ``{"ids"}`` (no special tokens added);
  ``{"op": "decode", "ids": [...]}`` -> ``{"text"}`` (special tokens kept).
* ``{"op": "quit"}`` ends the process.

A bad request gets ``{"id", "error": "..."}`` and the process keeps serving. The first line written
is ``{"ready": true, ...info}`` (or ``{"ready": false, "error": ...}`` and exit code 2).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _info(session) -> dict[str, Any]:
    return {"adapters": list(session.runner.adapters), "backend": session.backend,
            "artifact": session.describe(), "max_seq_len": session.runner.max_seq_len,
            "eos_ids": list(session.eos_ids), "chat_format": session.chat_format}


def handle(session, req: dict[str, Any]) -> dict[str, Any]:
    """Answer one request (see the module docstring)."""
    from .memory.engine import GenerationSettings, generate

    op = req.get("op")
    if op == "info":
        return _info(session)
    if op == "encode":
        return {"ids": session.tokenizer.encode(str(req["text"]), add_special_tokens=False).ids}
    if op == "decode":
        return {"text": session.tokenizer.decode([int(i) for i in req["ids"]], skip_special_tokens=False)}
    if op == "generate":
        s = req.get("settings") or {}
        eos = s.get("eos_ids")
        settings = GenerationSettings(
            max_new_tokens=int(s.get("max_new_tokens", 256)), temperature=float(s.get("temperature", 0.0)),
            top_p=float(s.get("top_p", 1.0)), seed=s.get("seed", 0), stop=tuple(s.get("stop") or ()),
            eos_ids=tuple(session.eos_ids) if eos is None else tuple(int(i) for i in eos))
        pieces: list[str] = []
        res = generate(session.runner, session.tokenizer, req.get("adapter"), str(req["prompt"]), settings,
                       lambda _tok, text: pieces.append(text))
        return {"text": res.text, "ids": res.token_ids, "pieces": pieces, "prompt_tokens": res.prompt_tokens,
                "stopped_by": res.stopped_by, "prefill_ms": res.prefill_s * 1e3, "decode_ms": res.decode_s * 1e3,
                "truncated_prompt_tokens": res.truncated_prompt_tokens}
    raise ValueError(f"unknown op {op!r}; expected info, generate, encode, decode or quit")


def serve(bundle: str, backend: str = "onnx", threads: int | None = 1, stdin=None, stdout=None) -> int:
    """Serve requests from ``stdin`` until EOF or ``quit``; returns the exit code."""
    from .core.errors import MemloraError
    from .runtime import open_bundle

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout

    def send(obj: dict) -> None:
        stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        stdout.flush()

    try:
        session = open_bundle(bundle, backend, threads=threads, embedder=False)
    except (MemloraError, OSError, ValueError) as e:
        send({"ready": False, "error": str(e)})
        return 2
    try:
        send({"ready": True, **_info(session)})
        for line in stdin:
            if not line.strip():
                continue
            rid = None
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
                rid = req.get("id")
                if req.get("op") == "quit":
                    send({"id": rid, "bye": True})
                    return 0
                send({"id": rid, **handle(session, req)})
            except (ValueError, KeyError, TypeError) as e:
                send({"id": rid, "error": f"{type(e).__name__}: {e}"})
        return 0
    finally:
        session.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memlora.serve", description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--backend", default="onnx", help="onnx, executorch, coreml or pytorch")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    # Everything the loaders print goes to stderr: stdout carries only protocol lines.
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        return serve(args.bundle, args.backend, args.threads, sys.stdin, real_stdout)
    finally:
        sys.stdout = real_stdout


if __name__ == "__main__":
    raise SystemExit(main())
