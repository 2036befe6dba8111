"""One price basis per comparison (issue 13, point 4): catalog prices by provider, the sweep's
provider (chosen or set), the GPUs priced from another basis stored, warned about and marked in
the report, and owned pricing's purchase scopes and exclusions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from objectives.accelerators import PRICE_PROVIDERS, choose_provider, load_accelerators, price_basis
from search.cli import app
from search.outputs import analyze, build_report, rows_from, sweep_context
from search.store import Store
from search.sweeps import (
    AnalyticEvaluator,
    SearchSpace,
    SpecError,
    mixed_basis_warning,
    parse_spec,
    start_sweep,
    stored_price_table,
)

SPEC = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "space": {
        "tp": [1],
        "weights": ["bf16", "fp8"],
        "kv_cache": ["fp8"],
        "max_batch": [1, 16, 64],
        "chunked_prefill": [8192],
    },
    "sampler": "exhaustive",
}
NO_PURCHASE = "no purchase price in the catalog for owned pricing"


def _spec(name: str, accelerators: list[str], **pricing) -> dict:
    return {**json.loads(json.dumps(SPEC)), "name": name, "accelerators": accelerators, "pricing": pricing}


def _stored(tmp_path, data: dict) -> tuple[Store, str]:
    """A sweep started with `start_sweep` on a SQLite file, every configuration evaluated
    in-process and stored, and marked finished (no Ray needed)."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    spec = parse_spec(data)
    name = start_sweep(store, spec, yaml.safe_dump(data), None, workers=1)
    ev = AnalyticEvaluator(spec)
    space = SearchSpace(spec)
    store.add_evaluations(name, ev.evaluate(np.arange(space.size)).rows(space, ev.name))
    store.update_sweep(name, status="finished")
    return store, name


# ------------------------------------------------------------------------------ catalog


def test_every_shipped_price_belongs_to_a_provider_and_has_a_source():
    for acc in load_accelerators().values():
        assert acc.price_provider in PRICE_PROVIDERS and acc.price_provider != "custom", acc.id
        assert acc.prices[acc.price_provider] == acc.usd_per_gpu_hour
        assert set(acc.prices) == set(acc.price_sources)
        for provider, source in acc.price_sources.items():
            assert source and source != "unsourced", (acc.id, provider)
        if acc.purchase_usd is not None:
            assert acc.purchase_scope in ("card", "system_share"), acc.id
    cat = load_accelerators()
    assert cat["H100-SXM"].price_provider == "aws"
    assert cat["GB200"].price_provider == "azure"  # its source also says AWS has no row: the first named wins
    assert cat["H100-PCIe"].price_provider == "neocloud"
    assert cat["A100-SXM-80GB"].prices["oracle"] == pytest.approx(4.0)
    assert "BM.GPU.A100-v2.8" in cat["A100-SXM-80GB"].price_sources["oracle"]
    assert cat["B200"].purchase_scope == "system_share" and cat["H100-SXM"].purchase_scope == "card"


def test_a_price_file_price_is_custom_and_replaces_the_shipped_prices(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("A100-SXM-80GB:\n  usd_per_gpu_hour: 1.5\nMI300X:\n  prices:\n    gcp: {value: 5.5, source: x}\n")
    cat = load_accelerators(path)
    a100 = cat["A100-SXM-80GB"]
    assert a100.price_provider == "custom" and dict(a100.prices) == {"custom": 1.5}
    assert a100.usd_per_gpu_hour == 1.5
    mi = cat["MI300X"]  # prices merge provider by provider; the default stays Azure's
    assert mi.price_provider == "azure" and mi.prices["gcp"] == 5.5 and mi.prices["oracle"] == 6.0
    path.write_text("H100-SXM:\n  prices:\n    ibm: 2.0\n")
    with pytest.raises(ValueError, match="unknown provider 'ibm'"):
        load_accelerators(path)


# ------------------------------------------------------------------------------ choosing the provider


def test_provider_auto_selection_lists_the_most_gpus_with_fixed_ties():
    cat = load_accelerators()
    # aws lists H100 and A100, oracle A100 and MI300X: a tie, broken by the order aws, azure, ...
    assert choose_provider(cat, ["H100-SXM", "A100-SXM-80GB", "MI300X"]) == "aws"
    # oracle lists both: one basis, no marks, A100 at Oracle's price
    basis = price_basis(cat, ["A100-SXM-80GB", "MI300X"])
    assert basis.provider == "oracle" and basis.auto and basis.mixed == ()
    assert basis.usd_per_gpu_hour["A100-SXM-80GB"] == pytest.approx(4.0)
    # every GPU on one list: no marks
    assert price_basis(cat, ["H100-SXM", "L40S", "B200"]).mixed == ()
    spec = parse_spec(_spec("auto", ["H100-SXM", "H100-PCIe", "L4"]))
    ev = AnalyticEvaluator(spec)
    assert ev.price_per_gpu_hour("H100-PCIe") == pytest.approx(3.29)  # not on AWS: its default (Lambda)


def test_explicit_provider_prices_from_its_list_and_marks_the_rest():
    spec = parse_spec(_spec("oci", ["H100-SXM", "A100-SXM-80GB"], provider="Oracle"))
    assert spec.pricing.provider == "oracle"
    ev = AnalyticEvaluator(spec)
    assert ev.price_per_gpu_hour("A100-SXM-80GB") == pytest.approx(4.0)
    assert ev.price_per_gpu_hour("H100-SXM") == pytest.approx(6.88)  # Oracle lists none in the catalog
    basis = price_basis(ev.catalog, spec.accelerators, spec.pricing.provider)
    assert basis.mixed == ("H100-SXM",) and basis.provider_of["H100-SXM"] == "aws" and not basis.auto


def test_unknown_provider_is_a_spec_error_naming_the_allowed_values(tmp_path):
    with pytest.raises(SpecError) as err:
        parse_spec(_spec("bad", ["H100-SXM"], provider="ibm"))
    assert "pricing.provider" in str(err.value)
    assert "allowed: aws, azure, gcp, oracle, neocloud, custom" in str(err.value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_spec("bad", ["H100-SXM"], provider="ibm")))
    result = CliRunner().invoke(app, ["run", str(path), "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error:") and "pricing.provider" in line and "neocloud" in line


# ------------------------------------------------------------------------------ stored, warned, shown


def test_mixed_basis_is_stored_warned_and_marked_in_the_report(tmp_path):
    store, name = _stored(tmp_path, _spec("mixed", ["H100-SXM", "H100-PCIe", "MI300X"]))
    table = store.get_sweep(name)["price_table"]
    assert table["provider"] == "aws" and table["provider_auto"] is True
    assert table["provider_of"] == {"H100-SXM": "aws", "H100-PCIe": "neocloud", "MI300X": "azure"}
    assert table["mixed"] == ["H100-PCIe", "MI300X"]
    assert table["usd_per_gpu_hour"]["H100-PCIe"] == pytest.approx(3.29)
    warning = mixed_basis_warning(table)
    assert "H100-PCIe is priced from Lambda's list and MI300X from Azure's list" in warning
    assert "the rest from AWS's list" in warning

    html = build_report(store, name)
    assert "H100-PCIe†" in html and "MI300X†" in html and "H100-SXM†" not in html
    assert "† H100-PCIe is priced from Lambda&#x27;s list" in html or "† H100-PCIe is priced from Lambda's list" in html
    assert "mixes prices from different providers" in html
    assert "Robust to price" not in html
    recs = analyze(sweep_context(store.get_sweep(name)), rows_from(store.get_evaluations(name)))["recommendations"]
    for rec in recs.values():
        if rec is not None:
            assert not any(c.startswith("Robust") for c in rec["what_would_change"])


def test_one_basis_has_no_marks_and_may_call_an_answer_robust(tmp_path):
    store, name = _stored(tmp_path, _spec("aws", ["H100-SXM", "L40S"]))
    table = store.get_sweep(name)["price_table"]
    assert table["mixed"] == [] and mixed_basis_warning(table) is None
    html = build_report(store, name)
    assert "†" not in html
    assert "mixes prices from different providers" not in html


def test_run_warns_on_stderr_when_a_sweep_starts_with_mixed_bases(tmp_path, monkeypatch):
    import search.cluster
    import search.sweeps

    monkeypatch.setattr(search.cluster, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(search.sweeps, "run_sweep", lambda *a, **k: {"evaluated": 0, "feasible": 1})
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(_spec("warned", ["H100-SXM", "GH200-96GB"])))
    result = CliRunner().invoke(app, ["run", str(path), "--quiet", "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}"])
    assert result.exit_code == 0, result.output
    assert "warning: prices compare different providers" in result.stderr
    assert "GH200-96GB is priced from Lambda's list" in result.stderr


def test_sweeps_stored_before_a_price_basis_are_read_with_their_default_providers():
    cat = load_accelerators()
    gpus = ["H100-SXM", "MI325X", "L4"]
    table = stored_price_table({"basis": "cloud", "usd_per_gpu_hour": {"H100-SXM": 6.88}}, cat, gpus, "cloud")
    assert table["provider"] == "aws" and table["mixed"] == ["MI325X"]
    assert table["usd_per_gpu_hour"] == {"H100-SXM": 6.88}


# ------------------------------------------------------------------------------ owned


def test_owned_excludes_gpus_without_a_purchase_price_and_says_why(tmp_path):
    store, name = _stored(tmp_path, _spec("own", ["H100-SXM", "L4"], basis="owned"))
    table = store.get_sweep(name)["price_table"]
    assert table["excluded"] == {"L4": NO_PURCHASE}
    assert table["purchase_scope"]["H100-SXM"] == "card"
    rows = rows_from(store.get_evaluations(name))
    l4 = [r for r in rows if r["accelerator"] == "L4"]
    assert l4 and all(NO_PURCHASE in r["reason"] and not r["feasible"] for r in l4)
    html = build_report(store, name)
    assert f"Excluded from the owned comparison: L4 ({NO_PURCHASE})" in html


def test_owned_purchase_prices_of_different_scope_are_marked():
    cat = load_accelerators()
    from search.sweeps import price_table

    table = price_table("owned", None, cat, ["H100-SXM", "B200", "GB200"], {})
    assert table["mixed"] == ["H100-SXM"]  # card only, beside per-GPU shares of DGX list prices
    warning = mixed_basis_warning(table)
    assert "H100-SXM: card price only (no server, network or rack share)" in warning
    assert "understated" in warning
    assert price_table("owned", None, cat, ["B200", "GB200"], {})["mixed"] == []
    # the cloud side of rent vs own keeps its own marks under owned pricing
    from search.sweeps import cloud_basis_note

    owned = price_table("owned", None, cat, ["H100-SXM", "GH200-96GB"], {})
    assert owned["cloud_mixed"] == ["GH200-96GB"] and owned["mixed"] == []  # GH200 has no purchase price
    assert owned["excluded"] == {"GH200-96GB": NO_PURCHASE}
    assert cloud_basis_note(owned) == "GH200-96GB is priced from Lambda's list; the rest from AWS's list."


# ------------------------------------------------------------------------------ catalog CLI


def test_catalog_shows_providers_and_filters_by_one():
    runner = CliRunner()
    result = runner.invoke(app, ["catalog", "gpus", "--provider", "oracle", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["A100-SXM-80GB", "MI300X"]
    assert rows[0]["prices"] == {"aws": pytest.approx(3.43088125), "oracle": 4.0}
    assert rows[0]["price_provider"] == "aws" and "BM.GPU.A100-v2.8" in rows[0]["price_sources"]["oracle"]
    table = runner.invoke(app, ["catalog", "gpus", "--wide"])
    assert table.exit_code == 0 and "aws*, oracle" in table.stdout and "neocloud (Lambda)*" in table.stdout
    bad = runner.invoke(app, ["catalog", "gpus", "--provider", "ibm"])
    assert bad.exit_code == 2 and "allowed: aws, azure, gcp, oracle, neocloud, custom" in bad.stderr
