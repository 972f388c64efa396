"""``memlora parity --stock BUNDLE``: run every artifact in its stock runtime, on the host.

For each artifact and adapter, the stock runtime (ExecuTorch's ``TextLLMRunner``, ONNX Runtime
GenAI) gets the rendered prompt of ``conformance.json``'s greedy case and generates as many
tokens greedily. Pass means: its tokenizer's ids equal conformance.json's (the prompt and the
tokenizer samples), its greedy tokens equal the PyTorch reference's (for a quantized artifact:
memlora's own runner's on the same files, since int4 legitimately differs from fp32), and it
stops at the first end id the reference emits. ExecuTorch's tokens are read from what the runner prints (its Python
token callback fails on pieces that are not whole UTF-8), compared byte for byte with the
reference tokens as the runner prints them, plus the token count from its stats. A runtime that
is not installed is reported as not run, with the reason; Core ML has no stock runner here.

Results go into each artifact's ``stock.check`` in ``manifest.json`` (temp file + rename); the
recorded file hashes are left as they are.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.bundle import MANIFEST, read_manifest, verify_files

RUNTIME_MODULES = {"executorch-text-llm-runner": ("executorch.extension.llm.runner", "pip install memlora[executorch]"),
                   "onnxruntime-genai": ("onnxruntime_genai", "pip install memlora[genai]")}


def runtime_missing(runtime: str) -> str | None:
    """None when the stock runtime imports here, else why not."""
    if runtime not in RUNTIME_MODULES:
        return f"{runtime} has no stock runtime that runs on this host"
    module, fix = RUNTIME_MODULES[runtime]
    code = f"import {module}"
    if runtime.startswith("executorch"):
        code += "; import executorch.extension.llm.custom_ops.custom_ops; import pytorch_tokenizers.pytorch_tokenizers_cpp"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"{module} does not import ({last[:160]}); {fix}"
    return None


def _env() -> dict:
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])  # the folder holding memlora/
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _request(bundle: Path, block: dict, conformance: dict) -> dict:
    cases = {g["adapter"]: g for g in conformance.get("greedy", [])}
    prompts = [(p["case"], p["text"]) for p in conformance.get("prompts", [])]
    adapters = {}
    for name, files in block["per_adapter"].items():
        g = cases.get(name)
        if g is None:
            continue
        text = next(t for c, t in prompts if c == g["case"])
        job = {k: (str(bundle / v) if isinstance(v, str) and k != "chat_format" else v) for k, v in files.items()}
        if "data_files" in files:
            job["data_files"] = [str(bundle / d) for d in files["data_files"]]
        job.update(prompt_text=text, prompt_ids=g["prompt_ids"], ids=g["ids"])
        adapters[name] = job
    tokenizer = block["per_adapter"][next(iter(block["per_adapter"]))].get("tokenizer", "tokenizer.json")
    return {"runtime": block["runtime"], "tokenizer": str(bundle / tokenizer), "eos_ids": block["eos_ids"],
            "adapters": adapters, "tokenizer_samples": conformance.get("tokenizer", [])}


def lossy(art: dict) -> bool:
    """Quantized or fp16: its greedy tokens may differ from the fp32 reference by design."""
    precision = art.get("precision") or (art.get("meta") or {}).get("precision", "fp32")
    return art.get("quant", "none") != "none" or precision != "fp32"


def artifact_greedy(bundle: Path, art: dict, jobs: dict) -> dict[str, list[int]]:
    """Greedy ids of memlora's own runner on the same artifact files (the same runtime kernels the
    stock runner uses), for each adapter's conformance prompt."""
    from ..backends import get_backend
    from ..core.artifact import Artifact
    from ..conformance import greedy

    runner = get_backend(art["backend"]).load(Artifact.from_json(art), Path(bundle))
    try:
        return {n: greedy(runner, n, job["prompt_ids"], len(job["ids"])) for n, job in jobs.items()}
    finally:
        runner.close()


def check_block(bundle: Path, block: dict, conformance: dict, timeout: float = 600, art: dict | None = None) -> dict:
    """Run one artifact's runtime block in a worker process; return its check record.

    The expected tokens are conformance.json's (the fp32 PyTorch reference). For a lossy artifact
    (int8/int4, fp16) they are memlora's own runner's on the same files, which passed parity within
    its level's tolerance; the agreement with conformance.json is recorded beside.
    """
    runtime = block["runtime"]
    reason = runtime_missing(runtime)
    if reason:
        return {"runtime": runtime, "run": False, "passed": None, "reason": reason}
    req = _request(Path(bundle), block, conformance)
    reference = "conformance.json (PyTorch fp32)"
    agreement = {}
    if art is not None and lossy(art):
        own = artifact_greedy(Path(bundle), art, req["adapters"])
        for name, job in req["adapters"].items():
            ref = job["ids"]
            agreement[name] = sum(a == b for a, b in zip(own[name], ref)) / max(len(ref), 1)
            job["ids"] = own[name]
        reference = (f"memlora's {art['backend']} runner on the same files ({art['quant']}: conformance.json "
                     "is the fp32 reference; agreement with it recorded)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memlora-stock-") as tmp:
        req_file, res_file = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req_file.write_text(json.dumps(req))
        try:
            done = subprocess.run([sys.executable, "-m", "memlora.stock.worker", str(req_file), str(res_file)],
                                  capture_output=True, timeout=timeout, env=_env())
        except subprocess.TimeoutExpired:
            return {"runtime": runtime, "run": True, "passed": False, "error": f"timed out after {timeout:.0f} s"}
        if done.returncode or not res_file.is_file():
            tail = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-3:]
            return {"runtime": runtime, "run": True, "passed": False,
                    "error": f"the {runtime} worker exited with {done.returncode}: {' | '.join(tail)[:400]}"}
        result = json.loads(res_file.read_text())
    per = result["adapters"]
    failures = [f"{name}: {f}" for name, r in per.items() for f in r["failures"]]
    failures += [f"tokenizer sample {t!r} encodes differently" for t in result.get("tokenizer_failures", [])]
    if not per:
        failures.append("conformance.json has no greedy case for these adapters")
    return {"runtime": runtime, "run": True, "passed": not failures, "failures": failures,
            "seconds": round(time.perf_counter() - t0, 2), "reference": reference,
            **({"conformance_agreement": agreement} if agreement else {}),
            "tokens_matched": {n: (r.get("tokens") if not r["failures"] else 0) for n, r in per.items()},
            "tokens_expected": {n: r.get("expected_tokens") for n, r in per.items()},
            "tokenizer_samples_checked": result.get("tokenizer_samples", 0), "adapters": per}


def stock_check(bundle: Path, write: bool = True, timeout: float = 600) -> dict:
    """Check every artifact of ``bundle`` in its stock runtimes; record into the manifest.

    Returns the manifest with ``stock.check`` filled per artifact, ``file_failures`` and
    ``stock_passed`` (False if any run failed; None if nothing could run).
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    file_failures = verify_files(bundle, manifest)
    conformance = json.loads((bundle / manifest.get("conformance", "conformance.json")).read_text("utf-8"))
    outcomes = []
    for art in manifest["artifacts"]:
        stock = art.get("stock") or {}
        blocks = stock.get("runtimes") or []
        if not blocks:
            stock["check"] = [{"runtime": None, "run": False, "passed": None,
                               "reason": "no stock runtime block (exported before memlora.stock)"}]
        else:
            broken = [f for f in file_failures if f.split(":")[0] in _paths(art)]
            stock["check"] = [({"runtime": b["runtime"], "run": False, "passed": False,
                                "error": "files failed the hash check: " + "; ".join(broken)} if broken
                               else check_block(bundle, b, conformance, timeout, art)) for b in blocks]
        art["stock"] = stock
        outcomes += [c["passed"] for c in stock["check"]]
    ran = [o for o in outcomes if o is not None]
    passed = (all(ran) and not file_failures) if ran else None
    manifest["stock_check"] = {"passed": passed, "file_failures": file_failures,
                               "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if write:
        _write_manifest_atomic(bundle, manifest)
    return dict(manifest, file_failures=file_failures, stock_passed=passed)


def _paths(art: dict) -> set[str]:
    return {p for rel in art["files"].values() for p in (rel, rel + ".data")}


def _write_manifest_atomic(bundle: Path, manifest: dict) -> None:
    tmp = bundle / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(bundle / MANIFEST)
