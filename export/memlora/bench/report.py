"""bench.json -> bench.md (a table a person reads) and PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

MODES = ("external", "fused")


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _rows(doc: dict, metric: str) -> list[dict]:
    return [r for r in doc["rows"] if r["metric"] == metric and r["status"] == "ok" and r.get("value") is not None]


def model_name(doc: dict) -> str:
    """The preset name, or the model folder's name."""
    src = doc["model"]["source"]
    return doc.get("model_name") or src.get("preset") or Path(src.get("path", doc["model"]["family"])).name


def header(doc: dict) -> list[str]:
    m, s, v, bw = doc["machine"], doc["settings"], doc["versions"], doc["bandwidth"]
    name = model_name(doc)
    mem = f", {m['memory_bytes'] / 2**30:.0f} GiB RAM" if m.get("memory_bytes") else ""
    load = f"load average {_fmt(m['loadavg'][0], '.2f')} at start, {_fmt(m['loadavg_end'][0], '.2f')} at end" \
        if m.get("loadavg") and m.get("loadavg_end") else ""
    return [
        f"# memlora bench: {name} ({doc['model']['family']}, {doc['model']['num_layers']} layers, "
        f"hidden {doc['model']['hidden_size']})", "",
        f"{doc['created']} · {m['cpu']} ({m['arch']}), {m['usable_cpus']} usable CPUs, {s['threads']} threads{mem} · "
        f"{m['os']}, Python {m['python']}" + (f" · {load}" if load else ""), "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), "",
        f"Settings: prefill prompts {s['prompt_lens']} tokens; decode {s['decode_tokens']} greedy tokens after a "
        f"{s['prompt_lens'][0]}-token prompt; {s['repeats']} timed runs after {s['warmup']} warm-up; "
        "median (min-max); every runner in its own process. "
        f"Memory bandwidth {bw['gbps']:.1f} GB/s ({bw['method']}).", "",
        "`x eager`: speedup against PyTorch eager + PEFT (fp32) on the same weights and the same adapter. "
        "`% roof`: decode tok/s x bytes read per token (every matmul weight, one row of each embedding "
        "table, the KV cache at the mean decode position) over that bandwidth; `-` where a token's bytes fit "
        "the last-level cache. `model RSS`: peak RSS minus the process after importing its runtime.", "", *_contention(m)]


def _contention(m: dict) -> list[str]:
    """A warning line when the machine was busier than its cores: timings are then noisy."""
    load = max((m.get("loadavg") or [0])[0], (m.get("loadavg_end") or [0])[0])
    if m.get("usable_cpus") and load > m["usable_cpus"]:
        return [f"**Contended machine**: load average up to {load:.1f} on {m['usable_cpus']} usable CPUs; "
                "timings are noisy, compare ratios within this run only.", ""]
    return []


def table(doc: dict, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The main table, one row per runner and adapter: (column names, cells). ``compact`` keeps
    the columns that fit a terminal (the full table is in bench.md)."""
    cols, cells = _table(doc)
    if not compact:
        return cols, cells
    lens = doc["settings"]["prompt_lens"]
    keep = [cols.index(c) for c in ("runner", "adapter", f"TTFT ms @{lens[-1]}", "decode tok/s", "x eager",
                                    "% roof", "peak RSS MiB")]
    return [cols[i] for i in keep], [[row[i].split(" (")[0] for i in keep] for row in cells]


def _table(doc: dict) -> tuple[list[str], list[list[str]]]:
    lens = doc["settings"]["prompt_lens"]
    index: dict = defaultdict(dict)
    for r in doc["rows"]:
        if r["status"] == "ok":
            index[(r["runner"], r["adapter"])][(r["metric"], r.get("requested_prompt_len"))] = r
    cols = ["runner", "adapter", "load s", *(f"TTFT ms @{n}" for n in lens), f"prefill tok/s @{lens[-1]}",
            "decode tok/s", "x eager", "% roof", "peak RSS MiB", "model RSS MiB", "disk MB", "parity"]
    cells = []
    for (runner, adapter), got in index.items():
        dec = got.get(("decode_tps", None))
        if adapter is None or dec is None:
            continue
        whole = index.get((runner, None), {})  # a peer (llama.cpp) has no per-runner rows: never add one mid-loop
        ttft = [got.get(("ttft_ms", n)) for n in lens]
        pre, disk = got.get(("prefill_tps", lens[-1])), got.get(("disk_bytes", None))
        rss, load = whole.get(("peak_rss_mb", None)), whole.get(("load_s", None))
        cells.append([
            runner, adapter, _fmt(load and load["value"], ".2f"),
            *(_fmt(t and t["value"], ".1f") + ("*" if t and t.get("note") else "") for t in ttft),
            _fmt(pre and pre["value"], ".0f"),
            f"{dec['value']:.1f} ({dec['min']:.1f}-{dec['max']:.1f})", _fmt(dec.get("vs_pytorch"), ".2f"),
            _fmt(dec.get("roofline_fraction") and 100 * dec["roofline_fraction"], ".1f"),
            _fmt(rss and rss["value"], ".0f"), _fmt(rss and rss.get("model_rss_mb"), ".0f"),
            _fmt(disk and disk["value"] / 1e6, ".2f"),
            {True: "pass", False: "FAIL", None: "-"}[dec.get("parity")]])
    return cols, cells


def markdown(doc: dict) -> str:
    """The whole bench.md: header, main table, goals, what was not measured and why."""
    cols, cells = table(doc)
    lines = header(doc) + ["## Speed and memory", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    if any(r.get("note") and r["metric"] == "ttft_ms" for r in doc["rows"]):
        lines += ["", "\\* prompt clipped to the artifact's max_seq_len - 1."]
    from .loop import section as loop_section
    from .peers import section

    lines += ["", *goals(doc["summary"]), "", *section(doc), *loop_section(doc.get("loop_turn"))]
    return "\n".join(lines) + "\n"


def goals(s: dict) -> list[str]:
    out = ["## Goals", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    for quant, b in s["decode_vs_eager"].items():
        per = ", ".join(f"{a} {_fmt(p['ratio'], '.2f')}x ({_fmt(p['tps'], '.1f')} vs {_fmt(p['eager_tps'], '.1f')})"
                        for a, p in (b.get("per_adapter") or {}).items())
        roof = b["roofline_fraction"]
        out.append(f"| decode vs eager, same adapter, {quant} (best: {b['runner']}) | median {_fmt(b['ratio'], '.2f')}x"
                   + (f" ({per} tok/s)" if per else "")
                   + (f", {100 * roof:.0f}% of roofline" if roof else "") + " | - | - |")
    sp = s.get("eager_decode_spread")
    if sp:
        per = ", ".join(f"{a} {v:.1f}" for a, v in sp["per_adapter"].items())
        out.append(f"| eager decode spread across adapters (same model, same work) | {sp['max_over_min']:.2f}x "
                   f"max/min ({per} tok/s) | ~1x | {'yes' if sp['max_over_min'] <= 1.25 else 'no: noisy machine'} |")
    for k, o in s["external_overhead"].items():
        per = ", ".join(f"{a} {100 * v:+.1f}%" for a, v in o["per_adapter"].items())
        out.append(f"| external decode overhead vs fused, {k} | {100 * o['mean']:+.1f}% ({per}) | "
                   f"<= {100 * o['target']:.0f}% | {'yes' if o['met'] else 'no'} |")
    for k, w in s["switch"].items():
        out.append(f"| adapter switch a-b-a, {k} | {_fmt(w.get('call_ms'), '.3f')} ms call; "
                   f"{_fmt(w.get('effective_ms'), '.3f')} ms call + the first step's extra time | "
                   + ("- | - |" if w.get("target") is None else
                      f"<= {w['target']:g} ms | {'yes' if w.get('met') else 'no'} |"))
    for k, m in s["memory"].items():
        out.append(f"| base + adapters vs one fused model, {k} | disk {m['disk_ratio_external']:.3f}x "
                   f"(all {m.get('adapters', 3)} fused: {m['disk_ratio_fused_all']:.2f}x"
                   f"{', est.' if m.get('disk_fused_all_estimated') else ''}); model RSS "
                   f"{_fmt(m['model_rss_ratio_external'], '.3f')}x (all fused resident: "
                   f"{_fmt(m['model_rss_ratio_fused_resident'], '.2f')}x); process peak "
                   f"{_fmt(m['rss_ratio_external'], '.3f')}x ({_fmt(m['rss_external_mb'], '.0f')} vs "
                   f"{_fmt(m['rss_fused_one_mb'], '.0f')} MiB) | <= {m['target']}x | {'yes' if m['met'] else 'no'} |")
    if s["not_measured"]:
        out += ["", "Not measured:", ""] + [f"- `{k}`: {v}" for k, v in s["not_measured"].items()]
    return out


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _grouped(doc: dict, metric: str) -> dict:
    """(backend/quant) -> mode -> (median over adapters, min, max)."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in _rows(doc, metric):
        if r["backend"] != "pytorch":
            acc[f"{r['backend']}\n{r['quant']}"][r["adapter_mode"]].append(r)
    return {g: {m: (statistics.median(x["value"] for x in rs), min(x.get("min", x["value"]) for x in rs),
                    max(x.get("max", x["value"]) for x in rs)) for m, rs in modes.items()} for g, modes in acc.items()}


def _bars(doc: dict, groups: dict, series: list[tuple[str, str]], ylabel: str, title: str, ref: float | None, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    names = list(groups)
    if ref:  # drawn above the bars (zorder), in a colour no bar uses
        ax.axhline(ref, color="crimson", linestyle="--", linewidth=1.5, zorder=5, label=f"PyTorch eager ({_num(ref)})")
    series = [(k, label) for k, label in series if any(k in modes for modes in groups.values())]
    width = 0.8 / max(1, len(series))
    for i, (key, label) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        vals = [groups[g].get(key, (0, 0, 0)) for g in names]
        bars = ax.bar(xs, [v[0] for v in vals], width, label=label,
                      yerr=[[v[0] - v[1] for v in vals], [v[2] - v[0] for v in vals]], capsize=3)
        ax.bar_label(bars, labels=[_num(v[0]) if v[0] else "" for v in vals], fontsize=7, padding=2)
    tops = [v[0] for modes in groups.values() for v in modes.values() if v[0]] + ([ref] if ref else [])
    if tops and min(tops) > 0 and max(tops) / min(tops) > 20:  # else a low eager line hugs the axis
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    m = doc["machine"]
    ax.set_title(f"{title}\n{model_name(doc)} - {m['cpu']}, "
                 f"{doc['settings']['threads']} threads - {doc['created'][:10]}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _ttft_lines(doc: dict, path: Path) -> Path | None:
    """TTFT against prompt length, one line per runner (median over adapters), log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in _rows(doc, "ttft_ms"):
        acc[r["runner"]][r["prompt_len"]].append(r["value"])
    if not acc:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    for runner, by_len in sorted(acc.items(), key=lambda kv: kv[0] != "pytorch/eager/none"):
        xs = sorted(by_len)
        style = dict(color="black", linestyle="--") if runner.startswith("pytorch") else {}
        ax.plot(xs, [statistics.median(by_len[x]) for x in xs], marker="o", label=runner, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("time to first token (ms, median)")
    ax.set_title(f"Prefill: time to first token\n{model_name(doc)} - "
                 f"{doc['machine']['cpu']}, {doc['settings']['threads']} threads - {doc['created'][:10]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plots(doc: dict, out_dir: Path) -> list[Path]:
    """decode_tps.png and peak_rss.png (per backend x quant, external vs fused, eager as a line)
    and ttft.png (time to first token against prompt length)."""
    paths = []
    dec = _grouped(doc, "decode_tps")
    eager = [r["value"] for r in _rows(doc, "decode_tps") if r["backend"] == "pytorch"]
    if dec:
        have = [m for m in MODES if any(m in modes for modes in dec.values())]
        title = "Decode speed: external LoRA vs fused" if len(have) > 1 else f"Decode speed ({have[0]} adapters)"
        series = [(m, m) for m in MODES] + [("gguf", "llama.cpp (base model)")]
        paths.append(_bars(doc, dec, series, "decode tok/s (median over adapters)",
                           title, statistics.median(eager) if eager else None,
                           out_dir / "decode_tps.png"))
    rss = _grouped(doc, "peak_rss_mb")
    for g, modes in _grouped(doc, "resident_peak_rss_mb").items():
        rss.setdefault(g, {})["resident"] = modes["fused"]
    eager_rss = [r["value"] for r in _rows(doc, "peak_rss_mb") if r["backend"] == "pytorch"]
    if rss:
        series = [("external", "external (base + all adapters)"), ("fused", "fused (one model loaded)"),
                  ("resident", "fused (all models resident)")]
        paths.append(_bars(doc, rss, series, "peak RSS (MiB)", "Peak memory per runner process",
                           eager_rss[0] if eager_rss else None, out_dir / "peak_rss.png"))
    ttft = _ttft_lines(doc, out_dir / "ttft.png")
    return paths + ([ttft] if ttft else [])


def rerender(json_path: Path) -> list[Path]:
    """Recompute the summary from a bench.json's rows and rewrite bench.md and the plots beside it."""
    import json

    from .rows import summarize

    json_path = Path(json_path)
    doc = json.loads(json_path.read_text())
    doc["summary"] = summarize(doc["rows"])
    json_path.write_text(json.dumps(doc, indent=1))
    md = json_path.with_name("bench.md")
    md.write_text(markdown(doc))
    return [md, *plots(doc, json_path.parent)]


if __name__ == "__main__":  # python -m memlora.bench.report OUT/bench.json
    import sys

    print(*rerender(Path(sys.argv[1])), sep="\n")
