"""Worker results -> bench.json rows (one per measurement) and the goal summary.

Every timing row carries median, min, max and n; speed rows carry ``vs_pytorch`` (a speedup
against PyTorch eager on the same weights and adapter: above 1 is faster). Field reference:
benchmarks/README.md.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

TARGETS = {"external_overhead": 0.10, "switch_ms": 5.0, "memory_ratio": 1.15}


def file_bytes(manifest: dict, artifact: dict) -> tuple[int, dict[str, int]]:
    """Bytes shared by every adapter (base model, data files) and bytes each adapter adds.

    A role ``model:<a>`` or ``adapter:<a>`` belongs to adapter ``a``; any other role is shared.
    A path counts its ``.data`` side file and, for a folder (``.mlpackage``), everything under it.
    """
    sizes = {f["path"]: f["bytes"] for f in manifest.get("files", [])}

    def size(rel: str) -> int:
        return sum(b for p, b in sizes.items() if p in (rel, rel + ".data") or p.startswith(rel.rstrip("/") + "/"))

    shared, own = 0, {a: 0 for a in artifact["adapters"]}
    for role, rel in artifact["files"].items():
        owner = role.split(":", 1)[1] if ":" in role else None
        if owner in own:
            own[owner] += size(rel)
        else:
            shared += size(rel)
    return shared, own


def _timing(seconds: dict, scale: float = 1.0, work: float | None = None) -> dict:
    """Stats of seconds -> a value in ms (``scale`` 1e3) or, with ``work``, in units per second."""
    if work is not None:
        return dict(value=work / seconds["median"], min=work / seconds["max"], max=work / seconds["min"], n=seconds["n"])
    return dict(value=seconds["median"] * scale, min=seconds["min"] * scale, max=seconds["max"] * scale, n=seconds["n"])


def _roof(dec_tps: float, wb: int | None, roof: dict | None) -> dict:
    """Roofline fields of one decode row; ``roof``: shape, bandwidth, cache size, backend, root, artifact."""
    if not wb or not roof:
        return {}
    if not roof.get("shape"):  # no config: stored weight bytes, an upper bound
        b = dict(bytes_per_token=wb, bytes_method="files as stored (no config.json)")
    else:
        from .roofline import bytes_per_token

        b = bytes_per_token(roof["backend"], roof.get("root"), roof.get("artifact"), roof["adapter"], roof["shape"],
                            wb, roof["context"])
    bw = roof["gbps"] * 1e9
    n = b["bytes_per_token"]
    out = dict(weight_bytes_per_token=n, **{k: v for k, v in b.items() if k != "bytes_per_token"},
               roofline_tps=bw / n, achieved_gbps=dec_tps * n / 1e9, roofline_fraction=dec_tps * n / bw)
    llc = roof.get("llc")
    if llc and n < llc:  # served from the CPU caches: a DRAM roofline says nothing
        out.update(roofline_fraction=None, roofline_note=f"{n / 2**20:.1f} MiB a token fits the {llc / 2**20:.0f} MiB "
                   "last-level cache: no DRAM roofline")
    elif out["roofline_fraction"] > 1:
        out.update(roofline_note="above the read roof: bytes per token undercounted or partly cache-resident")
    return out


def _runner_rows(base: dict, res: dict, plan: dict, weight_bytes: dict[str, int | None], roof: dict | None) -> list[dict]:
    rows: list[dict] = []

    def row(metric: str, unit: str, **kw) -> None:
        rows.append(dict(base, metric=metric, unit=unit, **kw))

    cap = plan.get("max_seq_len")
    row("load_s", "s", value=res["load_s"], programs=res.get("programs"))
    mib = lambda kb: kb / 1024 if kb else None  # noqa: E731
    row("peak_rss_mb", "MiB", value=mib(res["peak_rss_kb"]), programs=res.get("programs"), rss_runtime_mb=mib(res.get("rss_runtime_kb")),
        rss_loaded_mb=mib(res.get("rss_loaded_kb")), model_rss_mb=mib(res["peak_rss_kb"] - (res.get("rss_runtime_kb") or 0)))
    for name, a in res["adapters"].items():
        at = dict(adapter=name)
        row("set_adapter_s", "s", value=a["set_adapter_s"], **at)
        for key, s in a["prefill"].items():
            n = int(key)
            asked = [r for r in plan["requested_prompt_lens"] if (min(r, cap - 1) if cap else r) == n]
            note = f"requested {', '.join(map(str, asked))}; clipped to max_seq_len-1" if asked and asked != [n] else None
            extra = dict(prompt_len=n, requested_prompt_len=max(asked) if asked else n, note=note, **at)
            row("ttft_ms", "ms", **_timing(s, 1e3), **extra)
            row("prefill_tps", "tok/s", **_timing(s, work=n), **extra)
        dec = _timing(a["decode"], work=plan["decode_tokens"])
        ctx = plan["decode_prompt_len"] + plan["decode_tokens"] / 2
        fields = _roof(dec["value"], weight_bytes.get(name), roof and dict(roof, adapter=name, context=ctx))
        row("decode_tps", "tok/s", **dec, prompt_len=plan["decode_prompt_len"], decode_tokens=plan["decode_tokens"],
            **fields, **at)
    if "switch" in res:
        sw = res["switch"]
        row("switch_ms", "ms", **_timing(sw["call"], 1e3), adapter="a-b-a")
        if "switch_cost" in sw:
            row("switch_effective_ms", "ms", **_timing(sw["switch_cost"], 1e3), adapter="a-b-a", programs=res.get("programs"),
                first_step_ms=sw["first_step"]["median"] * 1e3, steady_step_ms=sw["steady_step"]["median"] * 1e3,
                note="per round: set_adapter + (first 1-token step after it - a steady step in the same round, "
                     "at least 0); median")
        else:  # a bench.json from before memlora-bench/2
            row("switch_effective_ms", "ms", value=(sw["call_plus_step"]["median"] - sw["steady_step"]["median"]) * 1e3,
                adapter="a-b-a", note="set_adapter + first step after it, minus a steady step")
    return rows


def runner_name(art: dict) -> str:
    """``backend/mode/quant`` of a manifest artifact, ``+variant`` where it records one (an int4
    export with a 4-bit head gets its own row beside the default one)."""
    variant = (art.get("meta") or {}).get("variant")
    return f"{art['backend']}/{art['adapter_mode']}/{art['quant']}" + (f"+{variant}" if variant else "")


def build_rows(results: list[dict], reference: dict, manifest: dict, bw_gbps: float, *, shape: dict | None = None,
               root=None, llc: int | None = None) -> list[dict]:
    """All rows: PyTorch eager first, then each artifact; ratios and external-vs-fused overhead last.

    ``shape`` (:func:`memlora.bench.roofline.model_shape`), ``root`` (the bundle) and ``llc`` (the
    last-level cache) make the roofline count bytes actually read; without them it uses file bytes."""
    rows: list[dict] = []

    def roof(backend: str, artifact: dict | None = None) -> dict:
        return dict(gbps=bw_gbps, shape=shape, llc=llc, backend=backend, root=root, artifact=artifact)

    ref_base = dict(runner="pytorch/eager/none", backend="pytorch", adapter_mode="eager", quant="none", adapter=None,
                    status="ok", parity=None)
    ref = reference["run"]
    if "error" in ref:
        rows.append(dict(ref_base, metric="run", status="error", reason=ref["error"]))
    else:
        wb = {n: ref["weight_bytes"] for n in ref["adapters"]}
        rows += _runner_rows(ref_base, ref, reference["plan"], wb, roof("pytorch"))
    for item in results:
        art = item["artifact"]
        base = dict(runner=runner_name(art), backend=art["backend"],
                    adapter_mode=art["adapter_mode"], quant=art["quant"], adapter=None, status="ok",
                    parity=(art.get("parity") or {}).get("passed"))
        shared, own = file_bytes(manifest, art)
        rows.append(dict(base, metric="disk_total_bytes", unit="B", value=shared + sum(own.values()), shared_bytes=shared))
        rows += [dict(base, metric="disk_bytes", unit="B", value=shared + b, adapter=a, own_bytes=b) for a, b in own.items()]
        run = item.get("run") or {}
        if "unavailable" in item or "error" in run:
            status = "unavailable" if "unavailable" in item else "error"
            rows.append(dict(base, metric="run", status=status, reason=item.get("unavailable") or run["error"]))
            continue
        rows += _runner_rows(base, run, item["plan"], {a: shared + b for a, b in own.items()}, roof(art["backend"], art))
        res = item.get("resident")
        if res:
            ok = "error" not in res
            runtime = (res.get("rss_runtime_kb") or 0) / 1024 if ok else None
            rows.append(dict(base, metric="resident_peak_rss_mb", unit="MiB", status="ok" if ok else "error",
                             value=res["peak_rss_kb"] / 1024 if ok else None, reason=res.get("error"),
                             rss_runtime_mb=runtime, model_rss_mb=res["peak_rss_kb"] / 1024 - runtime if ok else None,
                             note=f"{res.get('resident_models', 0)} fused models loaded at once, each prefilled"))
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict]) -> None:
    ref = {(r["metric"], r["adapter"], r.get("prompt_len")): r["value"] for r in rows
           if r["backend"] == "pytorch" and r["status"] == "ok" and r.get("value")}
    for r in rows:
        if r["backend"] == "pytorch" or r["status"] != "ok" or not r.get("value"):
            continue
        key = (r["metric"], r["adapter"], r.get("prompt_len") if r["metric"] != "decode_tps" else None)
        if r["metric"] == "decode_tps":  # eager decodes after the requested prompt; lengths may differ by a clip
            key = next((k for k in ref if k[:2] == key[:2]), key)
        if key in ref and r["metric"] in ("prefill_tps", "decode_tps"):
            r["vs_pytorch"] = r["value"] / ref[key]
        elif key in ref and r["metric"] in ("ttft_ms", "load_s"):
            r["vs_pytorch"] = ref[key] / r["value"]
    fused = {(r["backend"], r["quant"], r["adapter"]): r["value"] for r in rows
             if r["metric"] == "decode_tps" and r["adapter_mode"] == "fused" and r["status"] == "ok"}
    for r in list(rows):
        key = (r["backend"], r["quant"], r["adapter"])
        if r["metric"] == "decode_tps" and r["adapter_mode"] == "external" and key in fused:
            rows.append(dict({k: r[k] for k in ("runner", "backend", "adapter_mode", "quant", "adapter", "status", "parity")},
                             metric="decode_overhead_vs_fused", unit="fraction", value=fused[key] / r["value"] - 1,
                             note="fused decode tok/s / external decode tok/s - 1 (time overhead of external LoRA)"))


def _pick(ok: list[dict], metric: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in ok:
        if r["metric"] == metric:
            out[r["runner"]].append(r)
    return out


def _med(rs: list[dict], field: str = "value") -> float | None:
    vals = [r[field] for r in rs if r.get(field) is not None]
    return statistics.median(vals) if vals else None


def _ratio(a, b):
    return a / b if a and b else None


def summarize(rows: list[dict]) -> dict:
    """The goal figures: best export vs eager per quant, roofline, external overhead, switching, memory."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("value") is not None]
    decode = _pick(ok, "decode_tps")
    eager_rows = decode.get("pytorch/eager/none", [])
    eager = {r["adapter"]: r["value"] for r in eager_rows}
    best: dict = {}
    for runner, rs in decode.items():
        quant = rs[0]["quant"]
        if rs[0]["backend"] in ("pytorch", "llama.cpp") or (quant in best and best[quant]["decode_tps"] >= _med(rs)):
            continue
        # Like with like: each adapter against eager on the same adapter, then the median ratio.
        per = {r["adapter"]: dict(tps=r["value"], eager_tps=eager.get(r["adapter"]), ratio=r.get("vs_pytorch"))
               for r in rs}
        best[quant] = dict(runner=runner, decode_tps=_med(rs), eager_tps=_med(eager_rows), ratio=_med(rs, "vs_pytorch"),
                           per_adapter=per, roofline_fraction=_med(rs, "roofline_fraction"),
                           achieved_gbps=_med(rs, "achieved_gbps"))
    spread = None
    if len(eager) > 1 and min(eager.values()) > 0:
        spread = dict(max_over_min=max(eager.values()) / min(eager.values()), per_adapter=eager)
    t = TARGETS
    overhead = {k: dict(mean=statistics.mean(r["value"] for r in rs), per_adapter={r["adapter"]: r["value"] for r in rs},
                        target=t["external_overhead"]) for k, rs in _pick(ok, "decode_overhead_vs_fused").items()}
    # The switching target is for external adapters; eager and fused (a model reload) are context.
    switch = {k: dict(call_ms=rs[0]["value"], target=t["switch_ms"] if rs[0]["adapter_mode"] == "external" else None)
              for k, rs in _pick(ok, "switch_ms").items()}
    for k, rs in _pick(ok, "switch_effective_ms").items():
        switch.setdefault(k, {})["effective_ms"] = rs[0]["value"]
    for v in overhead.values():
        v["met"] = v["mean"] <= t["external_overhead"]
    for v in switch.values():
        v["met"] = None if v.get("target") is None else max(v["call_ms"], v.get("effective_ms") or 0) <= v["target"]
    skipped = {r["runner"]: f"{r['status']}: {r.get('reason')}" for r in rows if r["metric"] == "run"}
    from .peers import compare

    return dict(decode_vs_eager=best, eager_decode_spread=spread, external_overhead=overhead, switch=switch, memory=_memory(ok),
                not_measured=skipped, vs_llamacpp=compare(rows))


def _memory(ok: list[dict]) -> dict:
    """Disk and RSS of external adapters against fused models, per backend and quant."""
    t = TARGETS
    memory: dict = {}
    by_runner = {m: _pick(ok, m) for m in ("disk_total_bytes", "disk_bytes", "peak_rss_mb", "resident_peak_rss_mb")}
    for runner, rs in by_runner["disk_total_bytes"].items():
        backend, mode, quant = runner.split("/")
        fused_runner = f"{backend}/fused/{quant}"
        if mode != "external" or fused_runner not in by_runner["disk_total_bytes"]:
            continue
        one = statistics.mean(r["own_bytes"] for r in by_runner["disk_bytes"][fused_runner])
        n_ext, n_fused = len(by_runner["disk_bytes"][runner]), len(by_runner["disk_bytes"][fused_runner])
        # A bundle may hold fused models for fewer adapters (real sizes: the timed one only); all
        # of them would be one model each, so the total is scaled and marked as estimated.
        fused_all = by_runner["disk_total_bytes"][fused_runner][0]["value"] * n_ext / n_fused
        m = dict(disk_external_bytes=rs[0]["value"], disk_fused_one_bytes=one, disk_fused_all_bytes=fused_all,
                 disk_fused_all_estimated=n_fused < n_ext, adapters=n_ext, target=t["memory_ratio"])
        m["disk_ratio_external"] = m["disk_external_bytes"] / one
        m["disk_ratio_fused_all"] = m["disk_fused_all_bytes"] / one
        ext, fused = by_runner["peak_rss_mb"].get(runner, []), by_runner["peak_rss_mb"].get(fused_runner, [])
        ext_rss, fused_rss = _med(ext), _med(fused)
        res_rows = by_runner["resident_peak_rss_mb"].get(fused_runner, [])
        resident, resident_model = _med(res_rows), _med(res_rows, "model_rss_mb")
        # Model memory: peak minus the process after importing the runtime (Python, and torch
        # where a runtime imports it) - what an app embedding the runtime would add.
        ext_model, fused_model = _med(ext, "model_rss_mb"), _med(fused, "model_rss_mb")
        m.update(rss_external_mb=ext_rss, rss_fused_one_mb=fused_rss, rss_fused_resident_mb=resident,
                 rss_ratio_external=_ratio(ext_rss, fused_rss), rss_ratio_fused_resident=_ratio(resident, fused_rss),
                 model_rss_external_mb=ext_model, model_rss_fused_one_mb=fused_model,
                 model_rss_ratio_external=_ratio(ext_model, fused_model),
                 model_rss_ratio_fused_resident=_ratio(resident_model, fused_model))
        judged = m["model_rss_ratio_external"] or m["rss_ratio_external"] or 99
        m["met"] = m["disk_ratio_external"] <= t["memory_ratio"] and judged <= t["memory_ratio"]
        memory[f"{backend}/{quant}"] = m
    return memory
