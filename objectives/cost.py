"""What a GPU-hour costs and what a token costs.

Cloud: the catalog's on-demand $/GPU-hour (or a user's price). Owned: total cost of ownership
per GPU-hour,

    purchase_usd / (years * 8766 h)                       amortization
  + tdp_w / 1000 * pue * usd_per_kwh                       power (at TDP, an upper bound)
  + tdp_w / 1000 * pue * hosting_usd_per_kw_month * 12 / 8766   colocation space and cooling

Per unit served (module functions, all of the tokens or requests actually served):

    $/Mtok            = $/hour / (tokens/s * 3600) * 1e6
    $/request         = $/hour / (output tokens/s / osl * 3600)
    $/Mtok in + out   = $/hour / (output tokens/s * (isl + osl) / osl * 3600) * 1e6

Defaults and their sources live in data/pricing.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

HOURS_PER_YEAR = 8766.0


@dataclass(frozen=True)
class OwnershipTerms:
    """Assumptions of owned total cost of ownership."""

    years: float
    usd_per_kwh: float
    pue: float
    hosting_usd_per_kw_month: float

    @classmethod
    def default(cls) -> OwnershipTerms:
        data = load_pricing_defaults()
        return cls(**{k: float(data[k]["value"]) for k in ("years", "usd_per_kwh", "pue", "hosting_usd_per_kw_month")})


def load_pricing_defaults() -> dict:
    """The shipped pricing assumptions with their sources (data/pricing.yaml)."""
    text = resources.files("objectives").joinpath("data/pricing.yaml").read_text()
    return yaml.safe_load(text)


def tco_usd_per_gpu_hour(purchase_usd: np.ndarray, tdp_w: np.ndarray, terms: OwnershipTerms) -> np.ndarray:
    """Owned cost of one GPU-hour: amortized purchase + power x PUE + hosting."""
    amortization = np.asarray(purchase_usd, dtype=np.float64) / (terms.years * HOURS_PER_YEAR)
    kw = np.asarray(tdp_w, dtype=np.float64) / 1000.0
    power = kw * terms.pue * terms.usd_per_kwh
    hosting = kw * terms.pue * terms.hosting_usd_per_kw_month * 12.0 / HOURS_PER_YEAR
    return amortization + power + hosting


def usd_per_million_tokens(usd_per_hour: np.ndarray, tokens_per_s: np.ndarray) -> np.ndarray:
    """Dollars per million tokens at a sustained token rate (inf where the rate is 0)."""
    rate = np.asarray(tokens_per_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rate > 0, usd_per_hour / (rate * 3600.0) * 1e6, np.inf)


def usd_per_request(usd_per_hour: np.ndarray, output_tokens_per_s: np.ndarray, osl: np.ndarray | float) -> np.ndarray:
    """Dollars per request served: $/hour / (requests/s * 3600 s/h), with requests/s = output
    tokens/s served / osl (output tokens per request); inf where the rate is 0."""
    requests_per_s = np.asarray(output_tokens_per_s, dtype=np.float64) / np.asarray(osl, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(requests_per_s > 0, usd_per_hour / (requests_per_s * 3600.0), np.inf)


def usd_per_million_total_tokens(
    usd_per_hour: np.ndarray, output_tokens_per_s: np.ndarray, isl: np.ndarray | float, osl: np.ndarray | float
) -> np.ndarray:
    """Dollars per million input + output tokens: each request served brings isl prompt tokens
    with its osl output tokens, so total tokens/s = output tokens/s * (isl + osl) / osl."""
    isl = np.asarray(isl, dtype=np.float64)
    osl = np.asarray(osl, dtype=np.float64)
    return usd_per_million_tokens(usd_per_hour, np.asarray(output_tokens_per_s, dtype=np.float64) * (isl + osl) / osl)


def energy_j_per_token(gpus: np.ndarray, tdp_w: np.ndarray, tokens_per_s: np.ndarray) -> np.ndarray:
    """Joules per token with every GPU drawing its TDP (an upper bound on board power)."""
    rate = np.asarray(tokens_per_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rate > 0, gpus * tdp_w / rate, np.inf)
