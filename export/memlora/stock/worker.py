"""Run one artifact in its stock runtime, in a process of its own (``python -m memlora.stock.worker
REQUEST.json RESULT.json``). A process per run because ExecuTorch's runner prints the generated
text to file descriptor 1 (the only place its tokens can be read whole: its Python token callback
fails on pieces that are not complete UTF-8) and because runtimes do not give memory back.

The request names the runtime, the files and, per adapter, the prompt text and the reference ids
from ``conformance.json``; the result lists per adapter what the runtime produced and the failures.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path


# --- ExecuTorch TextLLMRunner --------------------------------------------------------------------

@contextlib.contextmanager
def _capture_fd1():
    """Collect everything written to file descriptor 1 (C ``printf`` included) into ``out[0]``."""
    out = [b""]
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield out
        finally:
            try:
                import ctypes

                ctypes.CDLL(None).fflush(None)  # the runner's C stdio buffer
            except OSError:
                pass
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            out[0] = tmp.read()


def _printable(piece: bytes) -> bytes:
    """ExecuTorch's ``safe_printf``: a one-byte piece that is neither printable nor space is dropped."""
    if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or piece[0] in b"\t\n\v\f\r"):
        return b""
    return piece


def _piece_bytes(cpp_tok, vocab_bytes, cur: int) -> bytes:
    """The bytes the runner prints for ``cur``: its own C++ HF tokenizer's piece (the Python binding
    is ``decode(token, skip_special_tokens=False)``); where that piece is not whole UTF-8 (the
    binding cannot return it), the token's bytes."""
    try:
        return cpp_tok.decode(cur, False).encode("utf-8")
    except UnicodeDecodeError:
        return vocab_bytes(cur)


def _vocab_bytes(tokenizer_file: str):
    """id -> raw bytes of the token (byte-level BPE alphabet undone; added tokens as text)."""
    doc = json.loads(Path(tokenizer_file).read_text("utf-8"))
    byte_map = _bytes_to_unicode_inverse()
    id_to_token = {v: k for k, v in doc["model"]["vocab"].items()}
    for t in doc.get("added_tokens", []):
        id_to_token[t["id"]] = t["content"]
    added = {t["id"] for t in doc.get("added_tokens", [])}

    def get(i: int) -> bytes:
        tok = id_to_token.get(i, "")
        if i in added:
            return tok.encode("utf-8")
        if tok.startswith("<0x") and tok.endswith(">") and len(tok) == 6:  # byte fallback
            return bytes([int(tok[3:5], 16)])
        if all(ch in byte_map for ch in tok):
            return bytes(byte_map[ch] for ch in tok)
        return tok.replace("\u2581", " ").encode("utf-8")

    return get


def _bytes_to_unicode_inverse() -> dict[str, int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _et_generate(runner, cpp_tok, vocab_bytes, text, prompt_ids, ref, max_new, end, GenerationConfig) -> dict:
    """Greedy-generate from ``text`` with the stock runner (from position 0) and compare with the
    reference ids ``ref``: token count from its stats, bytes from what it printed."""
    stats: dict = {}

    def on_stats(s):
        stats.update(prompt=s.num_prompt_tokens, generated=s.num_generated_tokens)

    runner.reset()  # the runner keeps its position across generate() calls (a chat)
    cfg = GenerationConfig(echo=False, max_new_tokens=max_new, temperature=0.0, num_bos=0, num_eos=0)
    with _capture_fd1() as out:
        runner.generate(text, cfg, stats_callback=on_stats)
    raw = out[0]
    cut = raw.rfind(b"PyTorchObserver ")
    raw = raw[:cut] if cut >= 0 else raw
    # Expected: the reference's tokens up to the first end id the runner checks (not the first
    # token, the one prefill returns), each printed as the runner prints it, then its newlines.
    stop = next((i for i, t in enumerate(ref) if i >= 1 and t in end), None)
    want = ref if stop is None else ref[: stop + 1]
    expected = b"".join(_printable(_piece_bytes(cpp_tok, vocab_bytes, c)) for c in want)
    expected += (b"\n" if stop is not None else b"") + b"\n"
    got = stats.get("generated", -2) + 1  # the runner counts the tokens after the first
    problems = []
    if stats.get("prompt") != len(prompt_ids):
        problems.append(f"the runner's tokenizer made {stats.get('prompt')} prompt tokens, "
                        f"conformance.json has {len(prompt_ids)}")
    if got != len(want):
        problems.append(f"generated {got} tokens, the reference {len(want)}"
                        + (" (it stops at an end id)" if stop is not None else ""))
    if raw != expected:
        problems.append(f"printed bytes differ from the reference tokens': {raw[:60]!r} vs {expected[:60]!r}")
    return {"prompt_tokens": stats.get("prompt"), "tokens": got, "expected_tokens": len(want),
            "stopped_at_end": stop is not None, "bytes_equal": raw == expected,
            "text": raw.decode("utf-8", "replace").rstrip("\n"), "problems": problems}


def run_executorch(req: dict) -> dict:
    from .executorch_meta import REQUIRED, read_constant_methods

    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama::custom_sdpa, update_cache)
    import executorch.kernels.quantized  # noqa: F401  (embedding_byte: int4/int8 exports' token table)
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
    from pytorch_tokenizers.pytorch_tokenizers_cpp import HFTokenizer

    tokenizer = req["tokenizer"]
    cpp_tok = HFTokenizer()
    cpp_tok.load(tokenizer)
    vocab_bytes = _vocab_bytes(tokenizer)
    results = {}
    for name, job in req["adapters"].items():
        res: dict = {"failures": []}
        results[name] = res
        data = job["data_files"]
        if len(data) > 1:
            res["failures"].append(f"{len(data)} data files; the Python runner takes one")
            continue
        meta = read_constant_methods(Path(job["program"]), Path(data[0]) if data else None)
        res["metadata"] = meta
        missing = [m for m in REQUIRED if m not in meta]
        if missing:
            said = ""
            try:  # the runner's own verdict, for the record
                TextLLMRunner(job["program"], tokenizer, *data)
            except RuntimeError as e:
                said = f" (it says: {e})"
            res["failures"].append(f"{Path(job['program']).name}: no {', '.join(missing)} constant method, so "
                                   f"ExecuTorch's TextLLMRunner refuses the program{said}; re-export it with this "
                                   "memlora (memlora.stock.executorch_meta)")
            continue
        end = set(req["eos_ids"])
        if set(meta.get("get_eos_ids", [])) != end:
            res["failures"].append(f"get_eos_ids {meta.get('get_eos_ids')} != the chat format's end ids {sorted(end)}")
        try:
            runner = TextLLMRunner(job["program"], tokenizer, data[0]) if data else TextLLMRunner(job["program"], tokenizer)
        except RuntimeError as e:
            res["failures"].append(f"TextLLMRunner refused {job['program']}: {e}")
            continue
        try:
            res.update(_et_generate(runner, cpp_tok, vocab_bytes, job["prompt_text"], job["prompt_ids"],
                                    job["ids"], len(job["ids"]), end, GenerationConfig))
            res["failures"] += res.pop("problems")
        except RuntimeError as e:
            res["failures"].append(f"TextLLMRunner.generate failed: {e}")
            continue
        enc = list(cpp_tok.encode(job["prompt_text"], 0, 0))
        res["tokenizer_ids_equal"] = enc == job["prompt_ids"]
        if enc != job["prompt_ids"]:
            res["failures"].append("the runner's C++ HF tokenizer encodes the prompt differently from conformance.json")
        del runner
    bad = [t for t in req.get("tokenizer_samples", []) if list(cpp_tok.encode(t["text"], 0, 0)) != t["ids"]]
    return {"adapters": results, "tokenizer_samples": len(req.get("tokenizer_samples", [])),
            "tokenizer_failures": [t["text"] for t in bad]}


# --- ONNX Runtime GenAI --------------------------------------------------------------------------

def _og_generate(og, model, ids, ref, max_new, end, name, adapter_file) -> dict:
    """Greedy-generate after ``ids`` (adapter ``name`` active when external) and compare with ``ref``."""
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_new)
    gen = og.Generator(model, params)
    if adapter_file:
        adapters = og.Adapters(model)
        adapters.load(adapter_file, name)
        gen.set_active_adapter(adapters, name)
    gen.append_tokens(ids)
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    del gen
    stop = next((i for i, t in enumerate(ref) if t in end), None)
    want = ref if stop is None else ref[: stop + 1]
    problems = []
    if out != want:
        first = next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), min(len(out), len(want)))
        problems.append(f"greedy ids differ from conformance.json from token {first}: {out[:first + 3]} "
                        f"vs {want[:first + 3]}")
    return {"prompt_tokens": len(ids), "tokens": len(out), "expected_tokens": len(want), "ids": out,
            "stopped_at_end": stop is not None, "ids_equal": out == want, "problems": problems}


def run_genai(req: dict) -> dict:
    import onnxruntime_genai as og

    from .genai_config import check_genai_config

    results = {}
    models: dict = {}
    tok_fail: list = []
    samples_checked = 0
    for name, job in req["adapters"].items():
        res: dict = {"failures": []}
        results[name] = res
        folder = job["model_folder"]
        problems = check_genai_config(Path(folder))
        if problems:
            res["failures"] += problems
            continue
        try:
            if folder not in models:
                models.clear()  # one model in memory at a time
                models[folder] = og.Model(folder)
            model = models[folder]
            tok = og.Tokenizer(model)
        except Exception as e:  # GenAI raises RuntimeError/OrtException with its message
            res["failures"].append(f"og.Model({folder}) failed: {e}")
            continue
        ids = list(tok.encode(job["prompt_text"]))
        res["tokenizer_ids_equal"] = ids == job["prompt_ids"]
        if ids != job["prompt_ids"]:
            res["failures"].append("GenAI's tokenizer encodes the prompt differently from conformance.json")
        if not samples_checked:
            for t in req.get("tokenizer_samples", []):
                if t["text"] and list(tok.encode(t["text"])) != t["ids"]:
                    tok_fail.append(t["text"])
            samples_checked = len(req.get("tokenizer_samples", []))
        end = set(req["eos_ids"])
        try:
            res.update(_og_generate(og, model, ids, job["ids"], len(job["ids"]), end, name, job.get("adapter_file")))
            res["failures"] += res.pop("problems")
        except Exception as e:  # GenAI raises RuntimeError / OrtException with its own message
            res["failures"].append(f"GenAI generation failed: {e}")
    return {"adapters": results, "tokenizer_samples": samples_checked, "tokenizer_failures": tok_fail}


RUNNERS = {"executorch-text-llm-runner": run_executorch, "onnxruntime-genai": run_genai}


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[0]).read_text())
    result = RUNNERS[req["runtime"]](req)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
