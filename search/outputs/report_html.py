"""HTML building blocks of the report: escaping, number formats with units ($, $/Mtok, ms / s,
percentages), tables, and the page's CSS."""

from __future__ import annotations

import html
import math
from typing import Any

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;
background:#f6f7f9;line-height:1.45;font-size:15px}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:4px 0 4px}h2{font-size:20px;margin:34px 0 10px;border-bottom:2px solid #e3e6ea;
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#5b6773;font-size:13px}table{border-collapse:collapse;width:100%;margin:8px 0 12px;font-size:13.5px}
th,td{border-bottom:1px solid #e3e6ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:14px}
.card{border:1px solid #dfe3e8;border-radius:8px;padding:12px 14px;background:#fcfdfe}
.card h3{margin-top:0}.kind{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5b6773}
.big{font-size:17px;font-weight:600}ul{margin:6px 0 6px 18px;padding:0}li{margin:3px 0}
pre{background:#1f2630;color:#e8edf2;padding:10px 12px;border-radius:6px;overflow-x:auto;font-size:12.5px}
.note{color:#5b6773;font-size:13px}.warn{color:#9a3b00}.changed{background:#fff4d6}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.src{font-size:12px;color:#5b6773}
.kv td:first-child{width:34%;color:#39434e}
"""


# ------------------------------------------------------------------------------ formatting


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _usd(v: float | None, digits: int = 2) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    if abs(v) >= 1000:
        return f"${v:,.0f}"
    return f"${v:,.{digits}f}"


def _mtok(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"${v:.3g}" if v < 100 else f"${v:,.0f}"


def _lat(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    ms = v * 1e3  # one unit on the whole page: latencies in ms, also past a second
    return f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.0f}%" if signed else f"{v:.0f}%"


def _num(v: float | None, fmt: str = "{:,.0f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


def _table(headers: list[str], rows: list[Any], *, numeric: set[int] | None = None, attrs: str = "") -> str:
    """An HTML table from already-escaped cell strings; a row is a list of cells or a tuple
    (row attributes, cells); `numeric` column indices align right."""
    numeric = numeric or set()
    head = "".join(f"<th{' class=n' if i in numeric else ''}>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        row_attrs, r = row if isinstance(row, tuple) else ("", row)
        cells = "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr{row_attrs}>{cells}</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _par(c: dict[str, Any]) -> str:
    s = f"TP {c['tp']}"
    if int(c.get("pp") or 1) > 1:
        s += f" × PP {c['pp']}"
    if int(c.get("ep") or 1) > 1:
        s += f", EP {c['ep']}"
    if int(c.get("attention_dp") or 1) > 1:
        s += f", attention DP {c['attention_dp']}"
    if int(c.get("mtp") or 0) > 0:
        s += f", MTP {c['mtp']}"
    return s


def mode_sentences(c: dict[str, Any]) -> list[str]:
    """One sentence for each frontier mode a configuration uses (empty when it uses none)."""
    out = []
    dp = int(c.get("attention_dp") or 1)
    if dp > 1:
        tp = int(c.get("tp") or 1)
        out.append(
            f"Attention data parallelism with expert parallelism (DEP): {dp} attention ranks of TP {tp} each "
            f"run their own batch and KV cache, and every MoE layer is expert-parallel over all {tp * dp} GPUs "
            "with a dispatch / combine all-to-all, so the weights are stored once per replica but the KV "
            "cache is not duplicated across TP ranks."
        )
    k = int(c.get("mtp") or 0)
    if k > 0:
        out.append(
            f"Speculative decoding (MTP {k}): the model's draft head proposes {k} token{'s' if k > 1 else ''} "
            f"and each step verifies {k + 1} positions per sequence, emitting the accepted run — fewer, "
            "slightly longer steps per output token."
        )
    return out
