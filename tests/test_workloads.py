"""Workloads: presets, length distributions (sampling vs. expected value), validation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from workloads import PRESETS, SLO, LengthDistribution, Workload, get_preset

PRESET_NAMES = ("chat", "rag", "code-completion", "summarization", "batch", "reasoning")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_exists_and_is_sane(name: str) -> None:
    assert name in PRESETS
    w = get_preset(name)
    assert isinstance(w, Workload)
    assert w.name == name
    assert w.description
    assert w.isl >= 1 and w.osl >= 1
    if w.offline:
        assert w.slos == []
    else:
        assert w.arrival_rate_per_s is not None and w.arrival_rate_per_s > 0
        assert w.slos
    for slo in w.slos:
        assert w.slo(slo.metric) is slo


def test_preset_shapes() -> None:
    assert get_preset("batch").offline
    assert get_preset("rag").isl > get_preset("chat").isl  # long retrieved context
    assert get_preset("reasoning").osl > get_preset("reasoning").isl  # long output
    assert get_preset("code-completion").osl < get_preset("chat").osl
    assert get_preset("chat").slo("tpot").max_s == pytest.approx(0.05)
    assert get_preset("chat").slo("e2e") is None


def test_get_preset_is_case_insensitive_and_a_copy() -> None:
    w = get_preset("  Chat ")
    assert w.name == "chat"
    w.slos.clear()
    w.arrival_rate_per_s = 999.0
    assert PRESETS["chat"].slos and PRESETS["chat"].arrival_rate_per_s == 10.0


def test_get_preset_unknown_lists_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        get_preset("nope")
    for name in PRESET_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "dist",
    [
        LengthDistribution(kind="lognormal", mean=1024.0, cv=0.8),
        LengthDistribution(kind="lognormal", mean=256.0, cv=0.3),
        LengthDistribution(kind="uniform", low=100, high=2000),
        LengthDistribution(kind="uniform", low=7, high=7),
        LengthDistribution(kind="empirical", values=[10, 200, 3000, 45]),
        LengthDistribution.fixed(512),
        LengthDistribution(kind="lognormal", mean=300.0, cv=0.0),
    ],
    ids=["lognormal-cv0.8", "lognormal-cv0.3", "uniform", "uniform-degenerate", "empirical", "fixed", "lognormal-cv0"],
)
def test_sample_mean_close_to_expected(dist: LengthDistribution) -> None:
    rng = np.random.default_rng(12345)
    x = dist.sample(rng, 200_000)
    assert x.shape == (200_000,)
    assert x.dtype == np.int64
    assert x.min() >= 1
    # rounding to whole tokens shifts the mean by < 0.5 token; sampling error of a cv 0.8
    # lognormal over 2e5 draws is ~0.2 %
    assert x.mean() == pytest.approx(dist.expected(), rel=0.01)


def test_sample_spreads() -> None:
    rng = np.random.default_rng(0)
    x = LengthDistribution(kind="lognormal", mean=1000.0, cv=0.5).sample(rng, 100_000)
    assert np.std(x) / np.mean(x) == pytest.approx(0.5, rel=0.05)
    u = LengthDistribution(kind="uniform", low=10, high=20).sample(rng, 10_000)
    assert u.min() == 10 and u.max() == 20  # both ends inclusive
    e = LengthDistribution(kind="empirical", values=[3, 5]).sample(rng, 1000)
    assert set(np.unique(e)) == {3, 5}


def test_sampling_is_reproducible_with_a_seed() -> None:
    dist = LengthDistribution(kind="lognormal", mean=700.0, cv=1.2)
    a = dist.sample(np.random.default_rng(7), 50)
    b = dist.sample(np.random.default_rng(7), 50)
    np.testing.assert_array_equal(a, b)


def test_expected_values() -> None:
    assert LengthDistribution(kind="uniform", low=100, high=2000).expected() == 1050.0
    assert LengthDistribution(kind="empirical", values=[1, 2, 3, 10]).expected() == 4.0
    assert LengthDistribution.fixed(77).expected() == 77.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"kind": "lognormal", "cv": 0.5}, "mean"),
        ({"kind": "fixed"}, "mean"),
        ({"kind": "uniform", "low": 500, "high": 100}, "low"),
        ({"kind": "uniform", "low": 10}, "high"),
        ({"kind": "empirical", "values": []}, "values"),
        ({"kind": "empirical"}, "values"),
        ({"kind": "empirical", "values": [5, 0, 3]}, ">= 1"),
        ({"kind": "lognormal", "mean": -5.0}, "mean"),
        ({"kind": "lognormal", "mean": 100.0, "cv": -0.1}, "cv"),
        ({"kind": "uniform", "low": 0, "high": 10}, "low"),
        ({"kind": "gamma", "mean": 100.0}, "kind"),
        ({"kind": "fixed", "mean": 100.0, "sigma": 1.0}, "sigma"),
    ],
)
def test_invalid_distributions_name_the_problem(kwargs: dict, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        LengthDistribution(**kwargs)
    assert words in str(info.value)


def test_invalid_workload_and_slo() -> None:
    fixed = LengthDistribution.fixed(100)
    with pytest.raises(ValidationError, match="arrival_rate_per_s"):
        Workload(input_tokens=fixed, output_tokens=fixed, arrival_rate_per_s=0.0)
    with pytest.raises(ValidationError, match="metric"):
        SLO(metric="latency", max_s=1.0)
    with pytest.raises(ValidationError, match="percentile"):
        SLO(metric="ttft", max_s=1.0, percentile=101)
    with pytest.raises(ValidationError, match="max_s"):
        SLO(metric="tpot", max_s=0.0)


def test_workload_from_dict_round_trip() -> None:
    w = Workload.model_validate(
        {
            "name": "mine",
            "input_tokens": {"kind": "uniform", "low": 100, "high": 300},
            "output_tokens": {"kind": "fixed", "mean": 50},
            "arrival_rate_per_s": 3.0,
            "slos": [{"metric": "ttft", "max_s": 0.5, "percentile": 95}],
        }
    )
    assert w.isl == 200.0 and w.osl == 50.0
    assert not w.offline
    assert Workload.model_validate(w.model_dump()) == w
