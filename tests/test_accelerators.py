"""Tests for the accelerator catalog (objectives/data/accelerators.yaml) and its loader."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
import yaml

from objectives.accelerators import (
    FLOP_FIELDS,
    NUMERIC_FIELDS,
    REQUIRED_FIELDS,
    Accelerator,
    UnknownAcceleratorError,
    get_accelerator,
    load_accelerators,
)

REQUIRED_IDS = (
    "A100-SXM-80GB",
    "A100-PCIe-80GB",
    "H100-SXM",
    "H100-PCIe",
    "H200-SXM",
    "GH200-96GB",
    "B200",
    "GB200",
    "L40S",
    "L4",
    "A10G",
    "MI300X",
    "MI325X",
    "MI355X",
)
PCIE_CARDS = ("A100-PCIe-80GB", "H100-PCIe", "L40S", "L4", "A10G")
FP4_GPUS = {"B200", "GB200", "MI355X"}


@pytest.fixture(scope="module")
def catalog() -> dict[str, Accelerator]:
    return load_accelerators()


@pytest.fixture(scope="module")
def raw_yaml() -> dict:
    text = resources.files("objectives").joinpath("data", "accelerators.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _write(tmp_path: Path, text: str, name: str = "override.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- shipped data


def test_every_required_id_is_present(catalog: dict[str, Accelerator]) -> None:
    missing = [gpu for gpu in REQUIRED_IDS if gpu not in catalog]
    assert not missing


@pytest.mark.parametrize("gpu", REQUIRED_IDS)
def test_required_fields_are_non_null_and_positive(catalog: dict[str, Accelerator], gpu: str) -> None:
    acc = catalog[gpu]
    assert acc.vendor in {"nvidia", "amd"}
    assert acc.peak_flops["bf16"] > 0
    for value in (
        acc.hbm_bytes,
        acc.hbm_bw_bytes_per_s,
        acc.scaleup_bw_bytes_per_s,
        acc.tdp_w,
        acc.usd_per_gpu_hour,
    ):
        assert isinstance(value, float)
        assert math.isfinite(value) and value > 0
    assert isinstance(acc.scaleup_domain, int) and acc.scaleup_domain >= 1
    assert isinstance(acc.gpus_per_node, int) and acc.gpus_per_node >= 1
    for dtype, flops in acc.peak_flops.items():
        assert dtype in FLOP_FIELDS.values()
        assert math.isfinite(flops) and flops > 0
    for optional in (acc.scaleout_bw_bytes_per_s, acc.purchase_usd):
        assert optional is None or (math.isfinite(optional) and optional > 0)
    for fname in REQUIRED_FIELDS:
        assert acc.sources[fname].strip()


def test_every_numeric_field_in_yaml_has_source_and_date(raw_yaml: dict) -> None:
    problems: list[str] = []
    for gpu, entry in raw_yaml.items():
        if gpu.startswith("_"):
            continue
        for fname, record in entry.items():
            if fname not in NUMERIC_FIELDS:
                continue
            where = f"{gpu}.{fname}"
            if not isinstance(record, dict):
                problems.append(f"{where}: not a {{value, source, date}} record")
                continue
            if record.get("value") is None:
                if not str(record.get("note") or "").strip():
                    problems.append(f"{where}: null value without a note")
                continue
            if not str(record.get("source") or "").strip():
                problems.append(f"{where}: empty source")
            if not str(record.get("date") or "").strip():
                problems.append(f"{where}: empty date")
    assert not problems, "\n".join(problems)


def test_yaml_has_meta_with_units(raw_yaml: dict) -> None:
    meta = raw_yaml["_meta"]
    assert meta["description"]
    assert set(NUMERIC_FIELDS) <= set(meta["units"])


def test_sources_include_dates(catalog: dict[str, Accelerator]) -> None:
    acc = catalog["H100-SXM"]
    assert acc.sources["usd_per_gpu_hour"].endswith(")")
    assert "AWS" in acc.sources["usd_per_gpu_hour"]


def test_sanity_h100_sxm(catalog: dict[str, Accelerator]) -> None:
    h100 = catalog["H100-SXM"]
    assert h100.peak_flops["bf16"] == pytest.approx(989e12, rel=0.01)
    assert h100.hbm_bw_bytes_per_s == pytest.approx(3.35e12)
    assert h100.hbm_bytes == pytest.approx(81559 * 2**20)  # nvidia-smi total of an "80 GB" H100
    assert h100.scaleup_bw_bytes_per_s == pytest.approx(450e9)  # per direction
    assert h100.scaleup_domain == 8


def test_dense_not_sparse_flops(catalog: dict[str, Accelerator]) -> None:
    # Datasheet sparse figures halved: A100 312 (not 624), L4 121 (not 242), H100 PCIe 756.
    assert catalog["A100-SXM-80GB"].peak_flops["bf16"] == pytest.approx(312e12)
    assert catalog["L4"].peak_flops["bf16"] == pytest.approx(121e12)
    assert catalog["H100-PCIe"].peak_flops["bf16"] == pytest.approx(756e12)


def test_fp8_unsupported_on_ampere(catalog: dict[str, Accelerator]) -> None:
    for gpu in ("A100-SXM-80GB", "A100-PCIe-80GB", "A10G"):
        assert not catalog[gpu].supports("fp8"), gpu
        assert catalog[gpu].supports("bf16")
    assert catalog["H100-SXM"].supports("FP8")


def test_fp4_only_on_blackwell_and_mi355x(catalog: dict[str, Accelerator]) -> None:
    with_fp4 = {gpu for gpu, acc in catalog.items() if acc.supports("fp4")}
    assert with_fp4 == FP4_GPUS


def test_flops_helper_rejects_unsupported_dtype(catalog: dict[str, Accelerator]) -> None:
    assert catalog["B200"].flops("fp4") == pytest.approx(9000e12)
    with pytest.raises(ValueError, match="fp8"):
        catalog["A100-SXM-80GB"].flops("fp8")


def test_pcie_cards_use_pcie_scaleup(catalog: dict[str, Accelerator]) -> None:
    for gpu in PCIE_CARDS:
        # PCIe Gen4/Gen5 x16 per direction, far below any NVLink figure.
        assert catalog[gpu].scaleup_bw_bytes_per_s <= 64e9, gpu


def test_gb200_nvl72_domain(catalog: dict[str, Accelerator]) -> None:
    assert catalog["GB200"].scaleup_domain == 72
    assert catalog["GB200"].gpus_per_node == 4


def test_catalog_returns_fresh_dicts() -> None:
    first = load_accelerators()
    first.pop("H100-SXM")
    assert "H100-SXM" in load_accelerators()


def test_accelerator_is_frozen_and_hashable(catalog: dict[str, Accelerator]) -> None:
    acc = catalog["L4"]
    with pytest.raises(AttributeError):
        acc.tdp_w = 1.0  # type: ignore[misc]
    assert hash(acc) == hash(catalog["L4"])


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("h100", "H100-SXM"),
        ("H100", "H100-SXM"),
        ("h100-sxm5-80gb", "H100-SXM"),
        ("H100-SXM5-80GB", "H100-SXM"),
        ("MI300X", "MI300X"),
        ("mi300x", "MI300X"),
        ("a100", "A100-SXM-80GB"),
        ("A100", "A100-SXM-80GB"),
        ("  gh200 ", "GH200-96GB"),
        ("h100_pcie_80gb", "H100-PCIe"),
        ("b200", "B200"),
    ],
)
def test_ids_and_aliases_resolve_case_insensitively(name: str, expected: str) -> None:
    assert get_accelerator(name).id == expected


@pytest.mark.parametrize("name", ["h10", "H100-SMX"])
def test_unknown_name_suggests_close_matches(name: str) -> None:
    with pytest.raises(UnknownAcceleratorError) as info:
        get_accelerator(name)
    err = info.value
    assert isinstance(err, ValueError)
    assert "H100-SXM" in err.suggestions
    assert "H100-SXM" in str(err)
    assert repr(name) in str(err)


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(UnknownAcceleratorError, match="no close match"):
        get_accelerator("tpu-v9-imaginary")


def test_get_accelerator_with_explicit_catalog(catalog: dict[str, Accelerator]) -> None:
    small = {"L4": catalog["L4"]}
    assert get_accelerator("nvidia-l4", small) is catalog["L4"]
    with pytest.raises(UnknownAcceleratorError):
        get_accelerator("h100", small)


# --------------------------------------------------------------------------- overrides

NEW_GPU = """
H100-SXM:
  usd_per_gpu_hour: 2.49
h200:
  usd_per_gpu_hour: {value: 3.1, source: "my negotiated rate", date: "2026-11-01"}
  purchase_usd: null
MyAccel-X:
  vendor: acme
  aliases: [myx]
  bf16_flops: 500e12
  fp8_flops: {value: 1.0e+15, source: "Acme datasheet", date: "2026-10"}
  hbm_bytes: 96e9
  hbm_bw_bytes_per_s: 3.0e12
  scaleup_bw_bytes_per_s: 200e9
  scaleup_domain: 8
  gpus_per_node: 8
  tdp_w: 600
  usd_per_gpu_hour: 1.75
"""


def test_override_changes_price_and_adds_gpu(tmp_path: Path) -> None:
    path = _write(tmp_path, NEW_GPU)
    cat = load_accelerators(path)
    shipped = load_accelerators()

    h100 = cat["H100-SXM"]
    assert h100.usd_per_gpu_hour == pytest.approx(2.49)
    assert h100.sources["usd_per_gpu_hour"] == f"user override {path}"
    # untouched fields keep the shipped values and sources
    assert h100.peak_flops == shipped["H100-SXM"].peak_flops
    assert h100.sources["bf16_flops"] == shipped["H100-SXM"].sources["bf16_flops"]

    # an alias key overrides the aliased entry; a null clears an optional field
    h200 = cat["H200-SXM"]
    assert h200.usd_per_gpu_hour == pytest.approx(3.1)
    assert h200.sources["usd_per_gpu_hour"] == "my negotiated rate (2026-11-01)"
    assert h200.purchase_usd is None
    assert "purchase_usd" not in h200.sources

    new = cat["MyAccel-X"]
    assert new.vendor == "acme"
    assert new.peak_flops == {"bf16": 500e12, "fp8": 1e15}
    assert not new.supports("fp4")
    assert new.scaleout_bw_bytes_per_s is None
    assert new.purchase_usd is None
    assert get_accelerator("MYX", cat) is new
    assert len(cat) == len(shipped) + 1

    # the shipped catalog itself is untouched
    assert load_accelerators()["H100-SXM"].usd_per_gpu_hour == shipped["H100-SXM"].usd_per_gpu_hour


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("H100-SXM:\n  hbm_bytes: -5\n", "hbm_bytes"),
        ("H100-SXM:\n  tdp_w: lots\n", "tdp_w"),
        ("H100-SXM:\n  usd_per_gpu_hour: .inf\n", "usd_per_gpu_hour"),
        ("H100-SXM:\n  usd_per_gpu_hour: true\n", "usd_per_gpu_hour"),
        ("H100-SXM:\n  scaleup_domain: 2.5\n", "scaleup_domain"),
        ("H100-SXM:\n  usd_per_gpu_hour: null\n", "usd_per_gpu_hour"),
        ("H100-SXM:\n  usd_per_gpu_hour: {source: x}\n", "usd_per_gpu_hour"),
        ("H100-SXM:\n  usd_per_gpu_hour: {value: 2, sauce: x}\n", "usd_per_gpu_hour"),
        ("H100-SXM:\n  hbm_byte: 80e9\n", "hbm_byte"),
        ("H100-SXM:\n  aliases: [h200]\n", "aliases"),
        ("New-GPU:\n  vendor: acme\n  bf16_flops: 1e14\n", "hbm_bytes"),
        ("New-GPU:\n  bf16_flops: 1e14\n", "vendor"),
    ],
)
def test_malformed_override_names_entry_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_accelerators(path)
    message = str(info.value)
    assert repr(field) in message
    entry = text.split(":", 1)[0]
    assert repr(entry) in message


@pytest.mark.parametrize(
    "text",
    ["- just\n- a list\n", "H100-SXM: 5\n", "H100-SXM: [1, 2\n"],
)
def test_malformed_override_document(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError):
        load_accelerators(_write(tmp_path, text))


def test_missing_override_file_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_accelerators(tmp_path / "nope.yaml")


def test_empty_override_file_is_shipped_catalog(tmp_path: Path) -> None:
    cat = load_accelerators(_write(tmp_path, ""))
    assert cat == load_accelerators()
