"""Cost per request and per total (input + output) token: the formulas of objectives.cost on
hand-computed numbers, the steady state that feeds them, and the evaluators that carry them."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.cost import usd_per_million_tokens, usd_per_million_total_tokens, usd_per_request
from objectives.models import load_model
from objectives.serving import evaluate, steady_state
from search.sweeps import SearchSpace, make_evaluator, parse_spec
from search.sweeps.evaluation import METRIC_COLUMNS

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def test_usd_per_request_and_per_total_token_by_hand():
    # $36/h serving 1000 output tokens/s of 250-token answers: 4 requests/s = 14,400 requests/h
    assert usd_per_request(np.array([36.0]), np.array([1000.0]), 250.0)[0] == pytest.approx(36.0 / 14_400)
    # with 750-token prompts each request carries 1000 tokens: 4000 tokens/s = 14.4 Mtok/h
    assert usd_per_million_total_tokens(np.array([36.0]), np.array([1000.0]), 750.0, 250.0)[0] == pytest.approx(2.5)
    assert usd_per_million_tokens(np.array([36.0]), np.array([1000.0]))[0] == pytest.approx(10.0)
    # nothing served: infinitely expensive, never a division warning
    with np.errstate(all="raise"):
        assert usd_per_request(np.array([36.0]), np.array([0.0]), 250.0)[0] == np.inf
        assert usd_per_million_total_tokens(np.array([36.0]), np.array([0.0]), 750.0, 250.0)[0] == np.inf


def _steady(rate: float | None):
    # cycle = 100 * 0.01 s + 1 s = 2 s; a replica emits 10 * 100 / 2 = 500 tokens/s; 2 GPUs at $3
    return steady_state(
        isl=900.0,
        osl=100.0,
        batch=np.array([10.0]),
        decode_step_s=np.array([0.01]),
        prefill_all_s=np.array([1.0]),
        ttft_s=np.array([0.1]),
        gpus=np.array([2.0]),
        tdp_w=np.array([700.0]),
        usd_per_gpu_hour=np.array([3.0]),
        arrival_rate_per_s=rate,
    )


def test_steady_state_costs_are_of_what_is_served():
    st = _steady(2.0)  # 2 requests/s = 200 tokens/s: one replica, $6/h
    assert st.replicas[0] == 1.0 and st.usd_per_hour[0] == 6.0
    assert st.usd_per_request[0] == pytest.approx(6.0 / (2.0 * 3600))
    assert st.usd_per_million_output_tokens[0] == pytest.approx(6.0 / (200 * 3600) * 1e6)
    assert st.usd_per_million_total_tokens[0] == pytest.approx(6.0 / (2000 * 3600) * 1e6)
    offline = _steady(None)  # one replica at full load: 500 tokens/s = 5 requests/s
    assert offline.usd_per_request[0] == pytest.approx(6.0 / (5.0 * 3600))
    assert offline.usd_per_million_total_tokens[0] == pytest.approx(6.0 / (5000 * 3600) * 1e6)


def test_evaluate_carries_the_cost_metrics_consistently():
    gpu = get_accelerator("H100-SXM")
    b = build_batch(load_model(LLAMA_8B), gpu, weights="fp8", tp=np.array([1, 2, 4]), batch=32, isl=8192, osl=256)
    m = evaluate(b, arrival_rate_per_s=5.0)
    assert m.feasible.all()
    # the fleet serves the whole rate: 5 requests/s
    np.testing.assert_allclose(m.usd_per_request, m.usd_per_hour / (5.0 * 3600))
    np.testing.assert_allclose(m.usd_per_million_total_tokens, m.usd_per_million_output_tokens * 256 / (8192 + 256))
    l4 = get_accelerator("L4")
    infeasible = evaluate(build_batch(load_model("meta-llama/Llama-3.1-70B-Instruct"), l4, weights="bf16"))
    assert not infeasible.feasible[0]  # 140 GB of weights on 24 GB
    assert np.isnan(infeasible.usd_per_request[0]) and np.isnan(infeasible.usd_per_million_total_tokens[0])


@pytest.mark.parametrize("evaluator", ["analytic", "simulator"])
def test_evaluators_carry_the_cost_metrics(evaluator):
    spec = parse_spec(
        {
            "model": LLAMA_8B,
            "workload": "rag",
            "accelerators": ["H100-SXM"],
            "space": {"tp": [1, 2], "weights": ["fp8"], "kv_cache": ["fp8"], "max_batch": [16]},
            "objectives": [{"metric": "tpot"}, {"metric": "usd_per_million_total_tokens"}],
            "evaluator": evaluator,
            "simulation": {"requests": 40},
        }
    )
    assert METRIC_COLUMNS[-2:] == ("usd_per_request", "usd_per_million_total_tokens")
    result = make_evaluator(spec).evaluate(np.arange(SearchSpace(spec).size))
    m = result.metrics
    ok = np.isfinite(m["usd_per_hour"])
    assert ok.any()
    np.testing.assert_allclose(result.objectives[:, 1], m["usd_per_million_total_tokens"])
    np.testing.assert_allclose(m["usd_per_request"][ok], m["usd_per_hour"][ok] / (5.0 * 3600))  # rag: 5 requests/s
    assert "usd_per_request" in result.rows(SearchSpace(spec), evaluator)[0]["metrics"]
