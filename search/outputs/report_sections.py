"""The report's HTML sections, one function each, from the analysis of `search.outputs.analysis`:
the question, the summary table, a card per recommendation, launch commands, rent vs own,
price sensitivity, the best point per GPU type and the method."""

from __future__ import annotations

from typing import Any

from objectives.queueing import DEFAULT_TARGET_UTILIZATION
from search.outputs.candidates import COST, KINDS, TITLES, SweepContext
from search.outputs.launch import launch_commands
from search.outputs.procurement import MARK, efficiency_bases, price_mark, pricing_assumptions
from search.outputs.report_html import _e, _lat, _mtok, _num, _par, _pct, _table, _usd, mode_sentences
from search.sweeps import LATENCY_METRICS, cloud_basis_note

EXTRAPOLATED_MARK = "‡"  # an interval from a broader region than the pick's

# ------------------------------------------------------------------------------ sections


def _values(v: Any) -> str:
    """A space dimension as a reader writes it: `1, 2, 4`, not a Python list."""
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def _question(ctx: SweepContext, record: dict[str, Any], analysis: dict[str, Any]) -> str:
    spec, w = ctx.spec, ctx.workload
    model = ctx.evaluator.model
    total = getattr(model, "total_params", None)
    active = getattr(model, "active_params", None)
    size = f"{total / 1e9:.1f} B parameters" if total else ""
    if model.is_moe and active:
        size += f" ({active / 1e9:.1f} B active per token, {model.n_experts} experts, top-{model.experts_per_token})"
    slos = ", ".join(f"p{s.percentile:g} {s.metric.upper()} ≤ {_lat(s.max_s)}" for s in w.slos) or "none"
    rate = f"{w.arrival_rate_per_s:g} requests/s" if w.arrival_rate_per_s else "offline (all requests queued)"
    cons = spec.constraints
    limits = [f"SLOs as constraints: {'yes' if cons.slos else 'no (checked for the recommendations anyway)'}"]
    limits.append(f"max GPUs: {cons.max_gpus if cons.max_gpus is not None else 'none'}")
    limits.append(f"budget: {_usd(cons.max_usd_per_hour, 0) + '/h' if cons.max_usd_per_hour is not None else 'none'}")
    if w.arrival_rate_per_s:
        cap = cons.target_utilization if cons.target_utilization is not None else DEFAULT_TARGET_UTILIZATION
        limits.append(
            f"headroom: replicas sized so each runs at ≤ {cap:.0%} of its capacity, lower where the SLO "
            "percentiles need it (constraints.target_utilization)"
        )
    objectives = ", ".join(
        f"{o.metric}" + (f" (p{o.percentile:g})" if o.metric in LATENCY_METRICS else "") for o in spec.objectives
    )
    summary = record.get("summary") or {}
    space = spec.space
    kv = [
        ("Model", f"{_e(spec.model)} <span class=sub>{_e(size)}</span>"),
        (
            "Workload",
            f"{_e(w.name)} — {_e(w.description)}<br><span class=sub>mean prompt {w.isl:,.0f} tokens, "
            f"mean output {w.osl:,.0f} tokens, {_e(rate)}</span>",
        ),
        ("SLOs", _e(slos)),
        ("Objectives", _e(objectives)),
        ("Constraints", _e("; ".join(limits))),
        (
            "Search space",
            _e(
                f"TP {_values(space.tp)} · PP {_values(space.pp)} · EP {_values(space.ep)} · "
                f"weights {_values(space.weights)} · KV cache {_values(space.kv_cache)} · "
                f"batch limit {_values(space.max_batch)} · prefill chunk {_values(space.chunked_prefill)} tokens · "
                f"replicas {_values(space.replicas)}"
            ),
        ),
        (
            "Search",
            _e(
                f"{spec.sampler} sampler, {summary.get('space_size', '?'):,} configurations in the space, "
                f"{sum((analysis.get('stages') or {}).values()) or analysis['stored_rows']:,} stored"
                + _stage_words(analysis)
                + f", {analysis['candidates']:,} meet every constraint and SLO"
                if isinstance(summary.get("space_size"), int)
                else f"{spec.sampler} sampler, {analysis['stored_rows']:,} stored configurations"
            ),
        ),
        ("Pricing basis", _e(_basis_words(ctx))),
        (
            "Sweep",
            _e(f"{record['name']} · status {record.get('status')} · finished {record.get('finished_at') or '–'}"),
        ),
    ]
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in kv)
    out = [f"<h2 id=question>The question</h2><table class=kv><tbody>{rows}</tbody></table>"]
    # accelerators
    pricing = pricing_assumptions(ctx)
    bases = {b["accelerator"]: b for b in efficiency_bases(ctx)}
    acc_rows = []
    for g in pricing["gpus"]:
        acc = ctx.catalog[g["accelerator"]]
        b = bases[g["accelerator"]]
        basis = "; ".join(f"{d}: {v}" for d, v in b["bases"].items())
        origin = "probe calibration" if b["calibrated"] else "defaults (no probe calibration)"
        acc_rows.append(
            [
                f"<b>{_e(acc.id)}{g['mark']}</b><br><span class=src>{_e(acc.vendor)}"
                f"{' · ' + _e(g['price_list']) + ' list' if ctx.basis == 'cloud' and g['price_list'] else ''}</span>",
                _e(f"{acc.hbm_bytes / 1e9:.0f} GB · {acc.hbm_bw_bytes_per_s / 1e12:.2f} TB/s"),
                _e(
                    f"{acc.peak_flops['bf16'] / 1e12:,.0f}"
                    + (f" / {acc.peak_flops['fp8'] / 1e12:,.0f}" if "fp8" in acc.peak_flops else " / –")
                ),
                _usd(g["usd_per_gpu_hour"]),
                f"<span class=src>{_e(g['cloud_source'])}</span>",
                _usd(g["purchase_usd"], 0)
                + (f"<br><span class=src>{_e(g['purchase_source'])}</span>" if g["purchase_source"] else ""),
                f"{_e(origin)}<br><span class=src>{_e(basis)}</span>",
            ]
        )
    out.append("<h3>Accelerators considered</h3>")
    out.append(
        _table(
            [
                "GPU",
                "HBM",
                "dense TFLOP/s bf16 / fp8",
                f"$/GPU-hour ({_e(ctx.basis)}{', ' + _e(pricing['price_list']) if ctx.basis == 'cloud' else ''})",
                "price source (date)",
                "purchase price (source)",
                "efficiencies from",
            ],
            acc_rows,
            numeric={3},
        )
    )
    out.append(_price_notes(pricing))
    # ownership terms
    term_rows = [
        [_e(t["term"]), _e(f"{t['value']:g}"), f"<span class=src>{_e(t['source'])}</span>", _e(t["date"])]
        for t in pricing["ownership_terms"]
    ]
    out.append("<h3>Ownership terms (owned TCO)</h3>")
    out.append(
        "<p class=note>Owned $/GPU-hour = purchase / (years × 8766 h) + TDP × PUE × $/kWh + TDP × PUE × hosting "
        "$/kW-month × 12 / 8766 (objectives.cost.tco_usd_per_gpu_hour; power at TDP, an upper bound).</p>"
    )
    out.append(_table(["term", "value", "source", "date"], term_rows, numeric={1}))
    return "\n".join(out)


def _basis_words(ctx: SweepContext) -> str:
    p = ctx.spec.pricing
    table = ctx.price_table
    if ctx.basis == "cloud":
        how = "chosen: it lists the most of the sweep's GPUs" if table.get("provider_auto") else "set in the spec"
        s = (
            f"cloud on-demand list prices per GPU-hour from {table.get('list') or 'the catalog'}'s list "
            f"(pricing.provider {table.get('provider')}, {how})"
        )
    else:
        s = "owned total cost of ownership per GPU-hour (terms below)"
    if p.price_file:
        s += f", with overrides from {p.price_file}"
    if table.get("mixed"):
        what = "whose purchase price covers less (card only)" if ctx.basis == "owned" else "priced from another basis"
        s += f"; {MARK} marks GPUs {what}"
    if table.get("excluded"):
        s += f"; left out: {', '.join(table['excluded'])} (no purchase price)"
    return s


def _price_notes(pricing: dict[str, Any]) -> str:
    """The footnote to every price shown: which GPUs are priced from another basis (marked), and
    which are left out of an owned comparison and why ('' when neither)."""
    notes = []
    if pricing["mixed_note"]:
        notes.append(f"{MARK} {pricing['mixed_note']}")
    if pricing["excluded_note"]:
        notes.append(pricing["excluded_note"])
    return "".join(f"<p class='note price-basis'>{_e(n)}</p>" for n in notes)


def _summary_table(ctx: SweepContext, recs: dict[str, Any]) -> str:
    rows = []
    for kind in KINDS:
        r = recs.get(kind)
        if r is None:
            rows.append((f' data-kind="{kind}"', [_e(TITLES[kind]), "no configuration qualifies", *[""] * 13]))
            continue
        rows.append(
            (
                f' data-kind="{kind}" data-config-id="{r["id"]}"',
                [
                    f"<b>{_e(r['title'])}</b>",
                    _e(r["accelerator"]) + price_mark(ctx, r["accelerator"]),
                    _e(f"{r['total_gpus']:.0f} ({r['replicas']:.0f} × {r['gpus_per_replica']:.0f})"),
                    _e(_par(r["parallelism"])),
                    _e(f"{r['weights']} / KV {r['kv_cache']}"),
                    _e(r["max_batch"]),
                    _usd(r["usd_per_hour"]),
                    _mtok(r[COST]),
                    _lat(r["ttft_s"]),
                    _lat(r["tpot_s"]),
                    _mtok(r["usd_per_request"]),
                    _mtok(r["usd_per_million_total_tokens"]),
                    *_interval_cells(ctx, r),
                    _e(r.get("stage") or "analytic"),
                ],
            )
        )
    return (
        _table(
            [
                "recommendation",
                "GPU",
                "GPUs (replicas × per replica)",
                "parallelism",
                "weights / KV",
                "batch limit",
                "$/hour",
                "$/Mtok",
                "TTFT",
                "TPOT",
                "$/request",
                "$/Mtok in+out",
                f"{ctx.latency_metric.upper()} p10 – p90",
                f"${ctx.cost_unit} p10 – p90",
                "latencies",
            ],
            rows,
            numeric={6, 7, 8, 9, 10, 11, 12, 13},
            attrs=' id="recommendations"',
        )
        + _interval_note(recs)
        + _price_notes(pricing_assumptions(ctx))
    )


def _interval_note(recs: dict[str, Any]) -> str:
    """The footnote of the interval columns' mark, when a pick carries it."""
    if not any(r and r.get("extrapolated") for r in recs.values()):
        return ""
    return (
        f"<p class='note'>{EXTRAPOLATED_MARK} extrapolated: the validation has too few rows like this "
        "configuration, so its interval is a wider one borrowed from a broader region (see How accurate is "
        "this?).</p>"
    )


def _interval_cells(ctx: SweepContext, r: dict[str, Any]) -> list[str]:
    """The pick's 80 % intervals of its latency and cost (EXTRAPOLATED_MARK where the metric is
    extrapolated; † marks a GPU priced from another provider's list)."""
    from search.outputs.report_accuracy import interval_cell

    money = _mtok if ctx.cost_column != "usd_per_hour" else _usd
    mark = f" {EXTRAPOLATED_MARK}" if r.get("extrapolated") else ""
    return [
        _e(interval_cell(r, ctx.latency_column, _lat) + mark),
        _e(interval_cell(r, ctx.cost_column, money)) + mark,
    ]


def _side(roof: dict[str, Any], step: str) -> str:
    """'memory bandwidth' or 'compute': the side of the ridge of one step, as in the roofline table."""
    s = roof[step]
    side = "memory bandwidth" if s["intensity"] < roof["ridge_flop_per_byte"] else "compute"
    return f"{side} ({s['intensity']:.3g} FLOP/B, ridge {roof['ridge_flop_per_byte']:.0f})"


def _rec_card(ctx: SweepContext, kind: str, r: dict[str, Any] | None, roof: dict[str, Any] | None = None) -> str:
    """One recommendation's card; `roof` (its roofline_data) gives the decode step's and the
    prefill's bounds, the same sides of the ridge as the roofline table."""
    if r is None:
        return (
            f'<div class=card data-kind="{kind}"><div class=kind>{_e(TITLES[kind])}</div>'
            "<p class=warn>No stored configuration meets every constraint and SLO.</p></div>"
        )
    kv = [
        ("GPU type and count", f"{r['accelerator']} × {r['total_gpus']:.0f}"),
        ("replicas for the target rate", f"{r['replicas']:.0f} of {r['gpus_per_replica']:.0f} GPU(s)"),
        ("parallelism", _par(r["parallelism"])),
        *[("mode", sentence) for sentence in mode_sentences(r["parallelism"])],
        ("quantization", f"{r['weights']} weights, {r['kv_cache']} KV cache — {r['quantization']}"),
        (
            "batch limit (running at)",
            f"{r['max_batch']} ({r['batch']:.0f} sequences in flight; {r['batch_that_fits']:.0f} fit)",
        ),
        ("prefill chunk", f"{r['chunked_prefill']} tokens"),
        ("$/hour", _usd(r["usd_per_hour"])),
        ("$ per million output tokens", _mtok(r[COST])),
        (
            "$ per request / per million input + output tokens",
            f"{_mtok(r['usd_per_request'])} / {_mtok(r['usd_per_million_total_tokens'])}",
        ),
        ("TTFT / TPOT", f"{_lat(r['ttft_s'])} / {_lat(r['tpot_s'])}"),
        (
            "output tokens/s per user / per GPU",
            f"{_num(r['output_tokens_per_s_per_user'], '{:,.1f}')} / "
            f"{_num(r['output_tokens_per_s_per_gpu'], '{:,.0f}')}",
        ),
        (
            "memory per GPU",
            f"{r['memory_per_gpu_gb']:.1f} GB of {r['hbm_per_gpu_gb']:.0f} GB "
            f"(weights {r['weights_per_gpu_gb']:.1f} GB)",
        ),
        *(
            [
                ("decode step bound", _side(roof, "decode")),
                ("prefill bound", _side(roof, "prefill")),
            ]
            if roof
            else []
        ),
        ("whole cycle bound (osl decode steps + prefill)", r["bound"] or "–"),
        ("latencies", r.get("basis") or "–"),
        (
            "engine",
            (r.get("engine") or "–")
            + ("" if r.get("config", {}).get("engine") else " (default: the efficiency model's serving values)"),
        ),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in kv)
    changes = "".join(f"<li>{_e(c)}</li>" for c in r["what_would_change"])
    return (
        f'<div class=card data-kind="{kind}"><div class=kind>{_e(r["title"])}</div>'
        f"<h3 class=big>{_e(r['label'])}</h3><p>{_e(r['reason'])}</p>"
        + (f"<p class=note data-mode=disaggregated>{_e(r['mode_note'])}</p>" if r.get("mode_note") else "")
        + f"<table class=kv><tbody>{rows}</tbody></table>"
        f"<b>What would change the answer</b><ul>{changes}</ul></div>"
    )


def _launch_section(ctx: SweepContext, recs: dict[str, Any]) -> str:
    out = ["<h2 id=launch>Launch commands</h2>"]
    out.append(
        "<p class=note>One command starts one replica; run the recommended number of replicas behind a load "
        "balancer. Flags: vLLM <code>--tensor-parallel-size --pipeline-parallel-size --enable-expert-parallel "
        "--quantization --kv-cache-dtype --max-num-seqs --max-num-batched-tokens</code>; SGLang <code>--tp-size "
        "--pp-size --ep-size --quantization --kv-cache-dtype --max-running-requests --chunked-prefill-size</code>; "
        "trtllm-serve <code>--tp_size --pp_size --ep_size --max_batch_size --max_num_tokens</code> (its "
        "quantization comes from the checkpoint).</p>"
    )
    names = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM (trtllm-serve)"}
    for kind in KINDS:
        r = recs.get(kind)
        if r is None:
            continue
        cmds = r.get("launch") or launch_commands(
            ctx.spec.model, r["config"], vendor=r["vendor"], replicas=r["replicas"], compute_dtype=r["compute_dtype"]
        )
        out.append(f'<details open data-kind="{kind}"><summary>{_e(r["title"])}: {_e(r["label"])}</summary>')
        for runtime, c in cmds.items():
            if c.get("chosen") is False and any(x.get("chosen") for x in cmds.values()):
                out.append(f"<h3>{_e(names[runtime])}</h3><p class=note>not the engine modelled for this pick</p>")
                continue
            if not c["available"]:
                why = next((n for n in c["notes"] if "only" in n), "not available on this GPU")
                out.append(f"<h3>{_e(names[runtime])}</h3><p class=warn>{_e(why)}</p>")
                continue
            notes = "".join(f"<li>{_e(n)}</li>" for n in c["notes"])
            extra = ""
            if c.get("extra_file"):
                extra = f"<pre># {_e(c['extra_file']['name'])}\n{_e(c['extra_file']['content'])}</pre>"
            out.append(
                f'<h3>{_e(names[runtime])}</h3><pre data-runtime="{runtime}">{_e(c["command"])}</pre>{extra}'
                + (f"<ul class=note>{notes}</ul>" if notes else "")
            )
        out.append("</details>")
    return "\n".join(out)


def _rent_own_section(rows: list[dict[str, Any]], ctx: SweepContext | None = None) -> str:
    table_rows = []
    for r in rows:
        table_rows.append(
            [
                f"<b>{_e(r['kind'])}</b><br><span class=src>{_e(r['label'])}{r.get('price_mark', '')}</span>",
                _usd(r["cloud_usd_per_hour"]),
                _usd(r["cloud_usd_per_month"], 0),
                _usd(r["cloud_usd_3y"], 0),
                _usd(r["owned_usd_per_hour"]),
                _usd(r["owned_usd_per_month"], 0),
                _usd(r["owned_usd_3y"], 0),
                _usd(r["purchase_usd_total"], 0),
                _usd(r["owned_cash_usd_3y"], 0),
                _pct(None if r["break_even_utilization"] is None else r["break_even_utilization"] * 100),
                _pct(None if r["break_even_utilization_3y"] is None else r["break_even_utilization_3y"] * 100),
            ]
        )
        if r["note"]:
            table_rows[-1][4] = f"<span class=warn>{_e(r['note'])}</span>"
    return (
        "<h2 id=rent-own>Rent vs own</h2>"
        "<p class=note>Cloud: the catalog's on-demand $/GPU-hour, billed every hour the fleet runs. Owned: the "
        "TCO rate (amortized purchase + power + hosting) every hour, used or not. Owning is cheaper when the fleet "
        "is busy more than the break-even utilization = owned $/h ÷ cloud $/h. The 3-year amortized figure spreads "
        "the purchase over the amortization period; the 3-year cash figure pays the whole purchase up front plus "
        "three years of power and hosting (and its break-even assumes the hardware is worth nothing after three "
        "years).</p>"
        + (_price_notes(pricing_assumptions(ctx)) if ctx is not None else "")
        + (
            f"<p class='note price-basis'>Cloud prices: {_e(cloud_basis_note(ctx.price_table))}</p>"
            if ctx is not None and ctx.basis == "owned" and cloud_basis_note(ctx.price_table)
            else ""
        )
        + _table(
            [
                "recommendation",
                "cloud $/h",
                "cloud $/month",
                "cloud 3 years",
                "owned $/h",
                "owned $/month",
                "owned 3 years (amortized)",
                "purchase",
                "owned 3 years (cash)",
                "break-even utilization",
                "break-even, 3-year write-off",
            ],
            table_rows,
            numeric=set(range(1, 11)),
            attrs=' id="rent-vs-own"',
        )
    )


def _sensitivity_section(ctx: SweepContext, sens: list[dict[str, Any]], recs: dict[str, Any]) -> str:
    rows = []
    for s in sens:
        cells = [
            f"<b>{_e(s['accelerator'])}{price_mark(ctx, s['accelerator'])}</b>",
            _e(f"{s['change_pct']:+.0f}%"),
            _usd(s["usd_per_gpu_hour"]),
        ]
        for kind in KINDS:
            new = s[kind]
            if new is None:
                cells.append("–")
                continue
            text = (
                f"{_e(new['label'])}<br><span class=src>{_mtok(new[ctx.cost_column])}{_e(ctx.cost_unit)}, "
                f"{_lat(new[ctx.latency_column])}</span>"
            )
            cells.append(f"<span class=changed>{text}</span>" if s["changed"][kind] else "unchanged")
        rows.append(cells)
    changed = sum(1 for s in sens for k in KINDS if s["changed"][k])
    pricing = pricing_assumptions(ctx)
    caveat = ""
    if pricing["mixed"]:
        what = (
            "purchase prices of different scope"
            if ctx.basis == "owned"
            else f"prices from different providers ({MARK}: not from {pricing['price_list']}'s list)"
        )
        caveat = (
            f" This comparison mixes {what}: an answer that does not change here has not been shown to hold on one "
            "like-for-like price basis."
        )
    return (
        "<h2 id=sensitivity>Price sensitivity</h2>"
        f"<p class=note>Each row moves one accelerator's $/GPU-hour by the given amount and re-ranks the stored "
        f"configurations ($/h and $/Mtok scale linearly with the GPU price; replicas do not change). Highlighted cells "
        f"are a different answer; {changed} of {len(sens) * 3} answers change.{_e(caveat)}</p>"
        + _price_notes(pricing)
        + _table(
            ["accelerator", "price move", "new $/GPU-h", "cheapest", "fastest", "knee"],
            rows,
            numeric={1, 2},
            attrs=' id="sensitivity-table"',
        )
    )


def _per_accelerator_section(ctx: SweepContext, per: list[dict[str, Any]]) -> str:
    rows = []
    for p in per:
        b = p["best"]
        if b is None:
            rows.append(
                [
                    f"<b>{_e(p['accelerator'])}{price_mark(ctx, p['accelerator'])}</b>",
                    _e(f"{p['candidates']} / {p['stored']}"),
                    f"<span class=warn>none qualifies: {_e(p['why_none'])}</span>",
                    *["–"] * 6,
                ]
            )
            continue
        move = p["price_change_to_be_cheapest_pct"]
        rows.append(
            [
                f"<b>{_e(p['accelerator'])}{price_mark(ctx, p['accelerator'])}</b>",
                _e(f"{p['candidates']} / {p['stored']}"),
                _e(b["label"]),
                _mtok(b[COST]),
                _usd(b["usd_per_hour"]),
                _lat(b["ttft_s"]),
                _lat(b["tpot_s"]),
                _e(b["bound"]),
                "cheapest overall" if move == 0 else _pct(move, signed=True),
            ]
        )
    return (
        "<h2 id=per-accelerator>Best point per accelerator</h2>"
        "<p class=note>The cheapest configuration of each GPU type that meets every constraint and SLO, and the price "
        "move that GPU would need to become the cheapest overall.</p>"
        + _table(
            [
                "accelerator",
                "qualifying / stored",
                "cheapest qualifying configuration",
                "$/Mtok",
                "$/hour",
                "TTFT",
                "TPOT",
                "bound",
                "price move to be cheapest",
            ],
            rows,
            numeric={3, 4, 5, 6, 8},
            attrs=' id="per-accelerator-table"',
        )
    )


def _fastest_method(ctx: SweepContext) -> str:
    budget = "$/hour within constraints.max_usd_per_hour (no limit when the spec sets none)"
    if ctx.fastest_tolerance == 0:
        return f"<li>Fastest within the budget: the lowest-latency qualifying point with {budget}.</li>"
    tol = f"{ctx.fastest_tolerance * 100:g}%"
    return (
        f"<li>Fastest within the budget: among the qualifying points with {budget}, within {tol} of the fastest "
        f"latency, the cheapest ({_e(ctx.cost_words)}; report.fastest_tolerance = {ctx.fastest_tolerance:g}), so a "
        "few percent of latency never buys a fleet many times the size.</li>"
    )


def _method_section(ctx: SweepContext) -> str:
    return (
        "<h2 id=method>Method and caveats</h2><ul class=note>"
        "<li>Metrics come from servesweep's analytic model (objectives/): bytes out of HBM, tensor-core FLOP/s, "
        "GPU-to-GPU messages and runtime overheads at achieved efficiencies, for continuous batching at the "
        "workload's length distributions. With an arrival rate, latencies are percentiles under load (queueing "
        "for the prefill pipeline and the batch slots, prefill chunks interfering with decodes, the tail of the "
        "prompt lengths; objectives/queueing.py) at each replica's share of the rate, and replicas are sized "
        "with headroom so every SLO percentile holds; scripts/validate_queueing.py prints the error against the "
        "serving simulator. Offline workloads use the steady state at the batch limit.</li>"
        "<li>Qualifying: fits in memory, within the GPU limit and the hourly budget, serves the arrival rate, and "
        "meets every SLO of the workload.</li>"
        f"<li>Knee: the point of the qualifying (latency, {_e(ctx.cost_words)}) Pareto front farthest from the "
        "straight line "
        "joining the front's fastest and cheapest points, after log-transforming and min-max normalizing each "
        "objective over the front, so distances compare percentage changes.</li>"
        + _fastest_method(ctx)
        + "<li>Roofline: per GPU, FLOPs and HBM bytes of one decode step (the running batch split into PP "
        "micro-batches at mean context) and of one prefill chunk of a prompt, over the modelled step time "
        "(including communication and overheads, so points sit below the roof).</li>"
        "<li>Guided sweeps store the configurations their sampler tried, not the whole space; the recommendations "
        "rank what was stored.</li></ul>"
    )


def _stage_words(analysis: dict[str, Any]) -> str:
    """' (200 simulated, 184 analytic only; the picks are among the simulated and measured)'
    for a multi-fidelity sweep, '' for a single-stage one."""
    stages = analysis.get("stages") or {}
    if len(stages) < 2:
        return ""
    parts = [f"{n:,} {'analytic only' if s == 'analytic' else s}" for s, n in sorted(stages.items())]
    return f" ({', '.join(parts)}; the picks are among the simulated and measured)"
