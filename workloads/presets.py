"""Named workloads. Lengths and targets are representative choices, stated here, not
measurements: interactive presets use a 50-99th percentile TTFT / TPOT pair typical of chat
products (TTFT under a second, TPOT near human reading speed, 50 ms = 20 tokens/s), offline
presets have no rate and no latency target."""

from __future__ import annotations

from workloads.workload import SLO, LengthDistribution, Workload


def _lognormal(mean: int, cv: float) -> LengthDistribution:
    return LengthDistribution(kind="lognormal", mean=float(mean), cv=cv)


PRESETS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            name="chat",
            description="conversational assistant: moderate prompts, medium answers, interactive",
            input_tokens=_lognormal(1024, 0.8),
            output_tokens=_lognormal(256, 0.8),
            arrival_rate_per_s=10.0,
            slos=[SLO(metric="ttft", max_s=1.0, percentile=99), SLO(metric="tpot", max_s=0.05, percentile=99)],
        ),
        Workload(
            name="rag",
            description="retrieval-augmented generation: long retrieved context, short answer",
            input_tokens=_lognormal(8192, 0.4),
            output_tokens=_lognormal(256, 0.6),
            arrival_rate_per_s=5.0,
            slos=[SLO(metric="ttft", max_s=2.0, percentile=99), SLO(metric="tpot", max_s=0.05, percentile=99)],
        ),
        Workload(
            name="code-completion",
            description="IDE completion: medium prompt, very short output, tight first-token latency",
            input_tokens=_lognormal(2048, 0.5),
            output_tokens=_lognormal(48, 0.7),
            arrival_rate_per_s=50.0,
            slos=[SLO(metric="ttft", max_s=0.3, percentile=90), SLO(metric="e2e", max_s=1.0, percentile=90)],
        ),
        Workload(
            name="summarization",
            description="document summarization: long input, medium output, relaxed latency",
            input_tokens=_lognormal(4096, 0.5),
            output_tokens=_lognormal(512, 0.5),
            arrival_rate_per_s=2.0,
            slos=[SLO(metric="ttft", max_s=5.0, percentile=90), SLO(metric="tpot", max_s=0.1, percentile=90)],
        ),
        Workload(
            name="batch",
            description="offline batch inference: all requests queued, throughput only",
            input_tokens=LengthDistribution.fixed(1024),
            output_tokens=LengthDistribution.fixed(1024),
        ),
        Workload(
            name="reasoning",
            description="reasoning model: short prompt, very long output, streaming speed matters",
            input_tokens=_lognormal(1024, 0.6),
            output_tokens=_lognormal(8192, 0.6),
            arrival_rate_per_s=1.0,
            slos=[SLO(metric="ttft", max_s=2.0, percentile=99), SLO(metric="tpot", max_s=0.04, percentile=99)],
        ),
    )
}


def get_preset(name: str) -> Workload:
    """A preset by name; ValueError lists the names."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown workload preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key].model_copy(deep=True)


def preset_with(name: str, overrides: dict) -> Workload:
    """A preset with some of its fields replaced, e.g. `preset_with("rag", {"arrival_rate_per_s": 20})`
    (what a spec's `workload: {preset: rag, arrival_rate_per_s: 20}` means). ValueError names an
    unknown preset or field."""
    base = get_preset(name)
    unknown = sorted(set(overrides) - set(Workload.model_fields))
    if unknown:
        raise ValueError(
            f"workload preset {name!r}: unknown field(s) {', '.join(unknown)}; "
            f"a preset's fields that can be overridden: {', '.join(f for f in Workload.model_fields if f != 'name')}"
        )
    merged = {**base.model_dump(), **overrides}
    if "name" not in overrides:
        merged["name"] = (
            f"{base.name} ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else base.name
        )
    return Workload.model_validate(merged)
