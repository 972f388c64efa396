"""The stock-runtime table printed by ``memlora parity --stock`` and ``memlora export --stock``."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table


def _key(a: dict) -> str:
    return f"{a['backend']}/{a['adapter_mode']}/{a['quant']}"


def stock_table(manifest: dict, root: Path) -> Table:
    """One row per artifact, stock runtime and adapter: tokens matched and the verdict."""
    table = Table("artifact", "stock runtime", "adapter", "tokens", "tokenizer", "result",
                  title=f"stock runtimes {root}")
    for a in manifest["artifacts"]:
        for check in (a.get("stock") or {}).get("check", []):
            if not check.get("run") or "adapters" not in check:
                why = check.get("reason") or check.get("error") or ""
                table.add_row(_key(a), str(check.get("runtime")), "-", "-", "-",
                              ("[yellow]not run[/yellow]: " if not check.get("run") else "[red]FAIL[/red]: ") + why)
                continue
            for name, r in check["adapters"].items():
                ok = not r["failures"]
                table.add_row(_key(a), check["runtime"], name, f"{r.get('tokens', 0)}/{r.get('expected_tokens', '?')}",
                              "=" if r.get("tokenizer_ids_equal") else "differs",
                              "[green]pass[/green]" if ok else "[red]FAIL[/red]: " + "; ".join(r["failures"])[:200])
    return table
