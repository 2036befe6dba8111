"""Fuzzing the sweep spec (issue 17, finding 4): whatever a spec file or a parsed document holds,
`load_spec` / `parse_spec` answer with a SpecError naming the field (never an uncaught
UnicodeDecodeError, OSError or ZeroDivisionError), and a spec they accept either starts on a real
SQLite store or is refused by `start_sweep` with a one-line ValueError.

Bounded: a few hundred generated examples per test, derandomized, no example database."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from search.store import Store
from search.sweeps import SpecError, load_spec, parse_spec, start_sweep

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

LONG = "x" * 5000
ODD_FLOATS = st.sampled_from([0.0, -0.0, -1.0, 1e-300, 5e-324, 1e300, 1e308, math.inf, -math.inf, math.nan, 0.5, 3.0])
ODD_INTS = st.sampled_from([-1, 0, 1, 2, 3, 7, 64, 1000, 2**31, 2**63, 2**64 + 1, 10**400])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    ODD_INTS,
    st.integers(-(2**70), 2**70),
    ODD_FLOATS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", ".", "/", "/etc/hostname", "/dev/null", LONG, "/" + "a" * 300, "all", "auto", "\x00"]),
    st.text(max_size=20),
)
ODD_PATHS = ["", ".", "/", "/etc/hostname", "/dev/null", "/proc", LONG, "/" + "a" * 300, "a\x00b", "~"]
MODELS = ["llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", "LLAMA-3.1-8B", "mixtral-8x7b", "Qwen/Qwen3-30B-A3B"]
GPUS = ["H100-SXM", "h100", "A100-SXM-80GB", "L40S", "MI300X", "B200", "H100"]


def _spec(odd: bool) -> st.SearchStrategy:
    """Spec documents: with `odd`, any field may hold anything scalar (the wrong type, an extreme
    number, an odd path); without, every field holds a value of its type, extremes included."""

    def pick(values: list) -> st.SearchStrategy:
        return st.one_of(st.sampled_from(values), SCALARS) if odd else st.sampled_from(values)

    def many(elements: st.SearchStrategy, max_size: int = 4) -> st.SearchStrategy:
        lists = st.lists(elements, min_size=0 if odd else 1, max_size=max_size)
        return st.one_of(lists, SCALARS) if odd else lists

    def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(strategy, SCALARS) if odd else strategy

    space = st.fixed_dictionaries(
        {},
        optional={
            "tp": many(pick([1, 2, 4, 8, 3, 1024])),
            "pp": many(pick([1, 2, 64])),
            "ep": many(pick([1, 2, 8, 256])),
            "weights": many(pick(["bf16", "fp8", "int4", "fp4", "mxfp4", "int8-wo", "FP8"] + (["fp3"] if odd else []))),
            "kv_cache": many(pick(["bf16", "fp8", "int8", "FP8"] + (["fp4"] if odd else []))),
            "max_batch": many(pick([1, 16, 256, 10**6, 2**40])),
            "chunked_prefill": many(pick([1, 512, 8192, 2**40])),
            "replicas": st.one_of(st.just("auto"), many(pick([1, 2, 64, 10**9]))),
        },
    )
    workload = st.one_of(
        pick(["chat", "rag", "batch", "reasoning", "code-completion", "summarization"] + (["nope"] if odd else [])),
        st.fixed_dictionaries(
            {"preset": pick(["chat", "rag", "batch"])},
            optional={"arrival_rate_per_s": pick([1e-300, 0.1, 20.0, 1e6, 1e308, math.inf])}
            | ({"unknown_field": SCALARS} if odd else {}),
        ),
    )
    simulation = st.fixed_dictionaries(
        {},
        optional={
            "requests": pick([10, 100, 500]),
            "seed": pick([0, 1, 2**32, 2**63 - 1]),
            "arrivals": pick(["poisson", "gamma"]),
            "cv": pick([1e-300, 0.01, 0.5, 1.0, 4.0, 100.0, math.inf]),
            "dispatch": pick(["least_loaded", "round_robin"]),
            "max_replicas": pick([1, 4, 64]),
            "block_size": pick([1, 16, 1024]),
        }
        | ({"trace": st.sampled_from(ODD_PATHS)} if odd else {}),
    )
    pricing = st.fixed_dictionaries(
        {},
        optional={
            "basis": pick(["cloud", "owned"]),
            "years": pick([1e-300, 1.0, 3.0, 1e308]),
            "usd_per_kwh": pick([0.0, 0.1, 1e308]),
            "pue": pick([1.0, 1.5, 1e308]),
            "hosting_usd_per_kw_month": pick([0.0, 150.0, 1e308]),
        }
        | ({"price_file": st.sampled_from(ODD_PATHS)} if odd else {}),
    )
    return st.fixed_dictionaries(
        {"model": st.one_of(st.sampled_from(MODELS), st.sampled_from(ODD_PATHS), SCALARS) if odd else pick(MODELS)},
        optional={
            "name": pick(["fuzz", "a" * 101, "../x", ".hidden"] if odd else ["fuzz.odd-1"]),
            "workload": workload,
            "accelerators": st.one_of(st.just("all"), many(pick(GPUS), max_size=3)),
            "space": maybe(space),
            "objectives": many(
                st.fixed_dictionaries(
                    {"metric": pick(["tpot", "ttft", "e2e", "usd_per_hour", "gpus", "output_tokens_per_s_per_gpu"])},
                    optional={"percentile": pick([1e-9, 50, 99, 99.9, 100])},
                ),
                max_size=3,
            ),
            "constraints": st.fixed_dictionaries(
                {},
                optional={
                    "slos": pick([True, False]),
                    "max_gpus": pick([1, 8, 64, 2**62]),
                    "max_usd_per_hour": pick([1e-300, 1.0, 400.0, 1e308]),
                    "target_utilization": pick([1e-300, 0.5, 0.8, 1.0]),
                },
            ),
            "pricing": pricing,
            "evaluator": pick(["analytic", "simulator"]),
            "calibration": st.sampled_from(["none", "latest", *ODD_PATHS]),
            "calibration_record": st.one_of(
                st.none(), st.dictionaries(st.sampled_from(["gpus", "efficiency", "x", ""]), SCALARS, max_size=3)
            ),
            "simulation": maybe(simulation),
            "sampler": pick(["tpe", "nsga2", "gp", "exhaustive"]),
            "budget": st.fixed_dictionaries(
                {}, optional={"trials": pick([1, 10, 10**9]), "wall_time_s": pick([1e-300, 1.0, 1e308])}
            ),
            "seed": pick([0, 1, 2**32, 2**63 - 1]),
        },
    )


ODD_SPEC = _spec(odd=True)
TYPED_SPEC = _spec(odd=False)
NAMES = itertools.count()


def _yaml_text(data: dict) -> str | None:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return None


def _only_spec_errors(call) -> None:
    try:
        call()
    except SpecError as exc:
        assert str(exc).strip(), "an empty message"


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_load_spec_takes_any_bytes(tmp_path_factory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_bytes(raw)
    _only_spec_errors(lambda: load_spec(path))


@pytest.mark.parametrize(
    "raw",
    [
        b"model: \xff\xfe llama\n",  # not UTF-8
        b"model: ''\n",
        b"model: .\n",
        b"model: /\n",
        b"model: /etc/hostname\n",
        ("model: " + LONG + "\n").encode(),
        ("model: llama-3.1-8b\nsimulation: {trace: " + LONG + "}\n").encode(),
        b"model: llama-3.1-8b\nsimulation: {arrivals: gamma, cv: .inf}\n",
        b"model: llama-3.1-8b\nsimulation: {arrivals: gamma, cv: 1e-300}\n",
        b"model: llama-3.1-8b\nsimulation: {seed: -1}\n",
        b"model: llama-3.1-8b\nseed: -1\n",
        b"[" * 5000,
    ],
)
def test_the_issues_reproducers_are_spec_errors_naming_the_field(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(raw)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert len(message) < 1000, message
    if b"[[[" not in raw and b"\xff" not in raw:
        field = "simulation." if b"simulation" in raw else "seed" if b"seed" in raw else "model"
        assert f"  {field}" in message, message


@FUZZ
@given(data=ODD_SPEC)
def test_parse_spec_raises_only_spec_errors(data: dict) -> None:
    _only_spec_errors(lambda: parse_spec(data))
    text = _yaml_text(data)
    if text is not None:  # the same document through the YAML file loader
        _only_spec_errors(lambda: parse_spec(yaml.safe_load(text)))


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}")
    yield store
    store.close()


@FUZZ
@given(data=TYPED_SPEC)
@example(data={"model": "llama-3.1-8b", "evaluator": "simulator", "simulation": {"arrivals": "gamma", "cv": 1e-300}})
@example(data={"model": "llama-3.1-8b", "evaluator": "simulator", "simulation": {"arrivals": "gamma", "cv": math.inf}})
@example(data={"model": "llama-3.1-8b", "evaluator": "simulator", "seed": -1})
def test_start_sweep_refuses_odd_specs_with_one_line_value_errors(sqlite_store: Store, data: dict) -> None:
    try:
        spec = parse_spec(data)
    except SpecError:
        event("refused by parse_spec")
        return
    text = _yaml_text(data) or json.dumps(data, default=str)
    name = f"fuzz-{next(NAMES)}"
    try:
        started = start_sweep(sqlite_store, spec, text, name, 1, submitter="fuzz")
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert not any(bare in message for bare in ("expected non-negative integer", "division by zero")), message
        event("refused by start_sweep")
        return
    event("started")
    assert sqlite_store.get_sweep(started)["status"] == "pending"
