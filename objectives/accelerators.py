"""Accelerator catalog: peak FLOP/s per dtype, memory, interconnect, power and prices.

The numbers live in ``objectives/data/accelerators.yaml``; every one carries its source and
date. This module reads that file (the only I/O besides an optional user override file),
validates it and turns each entry into a frozen :class:`Accelerator`.

Conventions (see the YAML ``_meta`` block):

* FLOP/s are dense (no 2:4 sparsity); a dtype missing from ``peak_flops`` has no tensor-core
  support in the catalog.
* ``scaleup_bw_bytes_per_s`` is per GPU per direction on the scale-up fabric (NVLink,
  Infinity Fabric, or PCIe for PCIe cards); ``scaleout_bw_bytes_per_s`` is per GPU per
  direction on the inter-node network and is ``None`` where no source was found.
* ``usd_per_gpu_hour`` is the GPU's default cloud on-demand list price per GPU-hour; its
  provider (``aws``, ``azure``, ``gcp``, ``oracle`` or ``neocloud``) is read from its source
  text. ``prices`` adds the GPU's list prices from other providers, each a sourced record under
  its provider's key; :attr:`Accelerator.prices` holds them all (the default included).
* ``purchase_usd`` is a per-GPU purchase estimate or ``None``; ``purchase_scope`` says what it
  covers: ``card`` (the card alone) or ``system_share`` (the GPU's share of a system list price:
  server, network and rack included as far as the system includes them).

A user YAML file in the same format can add accelerators or override fields of shipped ones
(field-by-field merge). Numbers may be bare (``usd_per_gpu_hour: 2.5``) or records
(``{value: 2.5, source: ..., date: ...}``); numbers without a source are attributed to
``user override <file>``. A user file that sets ``usd_per_gpu_hour`` of a GPU replaces that
GPU's shipped prices: the file's price is its only one, under provider ``custom``; a user
``prices`` mapping is merged provider by provider.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "DTYPES",
    "FLOP_FIELDS",
    "NUMERIC_FIELDS",
    "PRICE_PROVIDERS",
    "PURCHASE_SCOPES",
    "REQUIRED_FIELDS",
    "Accelerator",
    "PriceBasis",
    "UnknownAcceleratorError",
    "choose_provider",
    "classify_price_source",
    "get_accelerator",
    "load_accelerators",
    "price_basis",
    "price_list_name",
]

#: Price providers, in the fixed order that breaks ties when a sweep's provider is chosen
#: automatically. ``neocloud`` is any GPU cloud outside the hyperscalers (its source names it);
#: ``custom`` is a price from a user's price file.
PRICE_PROVIDERS: tuple[str, ...] = ("aws", "azure", "gcp", "oracle", "neocloud", "custom")

#: What a ``purchase_usd`` covers: the card alone, or the GPU's share of a system list price.
PURCHASE_SCOPES: tuple[str, ...] = ("card", "system_share")

# Patterns that name a provider in a price's source text; the earliest match in the text wins.
_PROVIDER_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aws", re.compile(r"\bAWS\b|\bEC2\b|Amazon")),
    ("azure", re.compile(r"\bAzure\b")),
    ("gcp", re.compile(r"Google Cloud|\bGCP\b|Compute Engine")),
    ("oracle", re.compile(r"\bOracle\b|\bOCI\b")),
    (
        "neocloud",
        re.compile(
            r"\b(Lambda|Vultr|CoreWeave|Crusoe|Nebius|RunPod|Together|Hyperstack|FluidStack|Paperspace|"
            r"Vast\.ai|DigitalOcean|Hot Aisle|TensorWave|Voltage Park|Genesis Cloud|Scaleway|OVHcloud)\b"
        ),
    ),
)

#: YAML field -> dtype key of :attr:`Accelerator.peak_flops`.
FLOP_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "bf16_flops": "bf16",
        "fp16_flops": "fp16",
        "fp8_flops": "fp8",
        "int8_ops": "int8",
        "fp4_flops": "fp4",
    }
)
DTYPES: tuple[str, ...] = tuple(FLOP_FIELDS.values())

_FLOAT_FIELDS: tuple[str, ...] = (
    "hbm_bytes",
    "hbm_bw_bytes_per_s",
    "scaleup_bw_bytes_per_s",
    "scaleout_bw_bytes_per_s",
    "tdp_w",
    "usd_per_gpu_hour",
    "purchase_usd",
)
_INT_FIELDS: tuple[str, ...] = ("scaleup_domain", "gpus_per_node")

#: Every numeric field of an entry, each a ``{value, source, date}`` record in the YAML.
NUMERIC_FIELDS: tuple[str, ...] = (*FLOP_FIELDS, *_FLOAT_FIELDS, *_INT_FIELDS)

#: Numeric fields that must be present and non-null for every accelerator.
REQUIRED_FIELDS: tuple[str, ...] = (
    "bf16_flops",
    "hbm_bytes",
    "hbm_bw_bytes_per_s",
    "scaleup_bw_bytes_per_s",
    "scaleup_domain",
    "gpus_per_node",
    "tdp_w",
    "usd_per_gpu_hour",
)

_TEXT_FIELDS: tuple[str, ...] = ("vendor", "purchase_scope")
_LIST_FIELDS: tuple[str, ...] = ("aliases",)
_FREE_TEXT_FIELDS: tuple[str, ...] = ("note", "notes")
_PRICES_FIELD = "prices"
_ALL_FIELDS: frozenset[str] = frozenset(
    (*NUMERIC_FIELDS, *_TEXT_FIELDS, *_LIST_FIELDS, *_FREE_TEXT_FIELDS, _PRICES_FIELD)
)
# Set by load_accelerators on an entry whose usd_per_gpu_hour comes from a user file.
_CUSTOM_PRICE = "_custom_price"
_RECORD_KEYS: frozenset[str] = frozenset({"value", "source", "date", "note", "confidence"})

_DATA_PACKAGE = "objectives"
_DATA_FILE = ("data", "accelerators.yaml")
_SHIPPED_ORIGIN = "objectives/data/accelerators.yaml"


@dataclass(frozen=True)
class Accelerator:
    """One accelerator type. All rates are per GPU; see the module docstring for units."""

    id: str
    vendor: str
    aliases: tuple[str, ...]
    #: dtype ("bf16", "fp16", "fp8", "int8", "fp4") -> dense FLOP/s (OP/s for int8);
    #: an absent dtype means no tensor-core support in the catalog.
    peak_flops: Mapping[str, float] = field(hash=False)
    hbm_bytes: float
    hbm_bw_bytes_per_s: float
    scaleup_bw_bytes_per_s: float
    scaleup_domain: int
    #: ``None`` where no source for the inter-node bandwidth was found.
    scaleout_bw_bytes_per_s: float | None
    gpus_per_node: int
    tdp_w: float
    usd_per_gpu_hour: float
    purchase_usd: float | None
    #: YAML field name -> "source (date)" for every numeric field that has a value.
    sources: Mapping[str, str] = field(hash=False, repr=False)
    #: provider (:data:`PRICE_PROVIDERS`) -> list $ per GPU-hour; the default price included.
    prices: Mapping[str, float] = field(default_factory=dict, hash=False, repr=False)
    #: provider -> "source (date)" of each of :attr:`prices`.
    price_sources: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    #: the provider of :attr:`usd_per_gpu_hour` (``custom``: a user's price file).
    price_provider: str = "custom"
    #: what :attr:`purchase_usd` covers (:data:`PURCHASE_SCOPES`); ``None`` where not stated.
    purchase_scope: str | None = None

    def supports(self, dtype: str) -> bool:
        """True when the catalog lists a dense tensor-core peak for ``dtype``."""
        return dtype.strip().lower() in self.peak_flops

    def flops(self, dtype: str) -> float:
        """Dense peak FLOP/s (OP/s for int8) for ``dtype``; ValueError if unsupported."""
        key = dtype.strip().lower()
        if key not in self.peak_flops:
            supported = ", ".join(sorted(self.peak_flops)) or "none"
            raise ValueError(
                f"accelerator {self.id!r} has no {key} tensor-core peak in the catalog (supported: {supported})"
            )
        return self.peak_flops[key]

    @property
    def names(self) -> tuple[str, ...]:
        """The id followed by the aliases."""
        return (self.id, *self.aliases)


class UnknownAcceleratorError(ValueError):
    """Raised by :func:`get_accelerator` for a name that is neither an id nor an alias."""

    def __init__(self, name: str, suggestions: tuple[str, ...], known: tuple[str, ...]) -> None:
        self.name = name
        self.suggestions = suggestions
        self.known = known
        if suggestions:
            hint = "did you mean " + ", ".join(suggestions) + "?"
        else:
            hint = "no close match."
        super().__init__(f"unknown accelerator {name!r}: {hint} Known accelerators: {', '.join(known)}")


# --------------------------------------------------------------------------- public API


def load_accelerators(overrides: str | Path | None = None) -> dict[str, Accelerator]:
    """The shipped catalog, optionally merged with a user YAML file, keyed by id.

    The override file uses the catalog format. An entry whose key matches an existing id or
    alias (case-insensitively) overrides that accelerator field by field; any other key adds a
    new accelerator, which must then give ``vendor`` and every field of
    :data:`REQUIRED_FIELDS`. Malformed input raises ``ValueError`` naming entry and field.
    """
    if overrides is None:
        return dict(_shipped_catalog())
    path = Path(overrides)
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        shown = origin if len(origin) <= 120 else f"{origin[:120]}... ({len(origin)} characters)"
        raise ValueError(f"cannot read accelerator override file {shown}: {exc.strerror or exc}") from None
    user = _parse_document(text, origin, default_source=f"user override {origin}")
    merged = {key: dict(entry) for key, entry in _shipped_raw().items()}
    index = _raw_name_index(merged)
    for key, entry in user.items():
        target = index.get(_normalize(key))
        if target is None:
            merged[key] = dict(entry)
            index[_normalize(key)] = key
        else:
            user_prices = entry.get(_PRICES_FIELD)
            if "usd_per_gpu_hour" in entry:
                # the file's price replaces the GPU's shipped prices (it is the user's own)
                merged[target].pop(_PRICES_FIELD, None)
            shipped_prices = merged[target].get(_PRICES_FIELD) or {}
            merged[target].update(entry)
            if user_prices is not None:
                merged[target][_PRICES_FIELD] = {**shipped_prices, **user_prices}
        target_key = target if target is not None else key
        if "usd_per_gpu_hour" in entry:
            merged[target_key][_CUSTOM_PRICE] = True
    return _build_catalog(merged, origin)


def get_accelerator(name: str, catalog: Mapping[str, Accelerator] | None = None) -> Accelerator:
    """Look an accelerator up by id or alias, case-insensitively (``_``/spaces ~ ``-``).

    Raises :class:`UnknownAcceleratorError` (a ``ValueError``) listing close matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"accelerator name must be a string, got {type(name).__name__}")
    cat = _shipped_catalog() if catalog is None else catalog
    index: dict[str, str] = {}
    for key, acc in cat.items():
        for alias in (key, *acc.names):
            index.setdefault(_normalize(alias), key)
    wanted = _normalize(name)
    if wanted in index:
        return cat[index[wanted]]
    close = difflib.get_close_matches(wanted, list(index), n=8, cutoff=0.6)
    suggestions: list[str] = []
    for match in close:
        key = index[match]
        if key not in suggestions:
            suggestions.append(key)
    raise UnknownAcceleratorError(name, tuple(suggestions[:5]), tuple(sorted(cat)))


def classify_price_source(source: str) -> str:
    """The provider (:data:`PRICE_PROVIDERS`) a price's source text names first; ``custom``
    where it names none (a user's own figure)."""
    found = [(m.start(), provider) for provider, pattern in _PROVIDER_PATTERNS if (m := pattern.search(source))]
    return min(found)[1] if found else "custom"


def price_list_name(acc: Accelerator, provider: str) -> str:
    """Whose list `acc`'s `provider` price comes from, as a reader says it: ``AWS``, ``Azure``,
    ``Google Cloud``, ``Oracle``, the GPU cloud the source names (``Lambda``) for ``neocloud``,
    ``the price file`` for ``custom``."""
    fixed = {"aws": "AWS", "azure": "Azure", "gcp": "Google Cloud", "oracle": "Oracle", "custom": "the price file"}
    if provider in fixed:
        return fixed[provider]
    pattern = dict(_PROVIDER_PATTERNS)["neocloud"]
    m = pattern.search(acc.price_sources.get(provider, ""))
    return m.group(0) if m else "a GPU cloud"


@dataclass(frozen=True)
class PriceBasis:
    """One price basis for a comparison: the provider, each GPU's price and where it came from."""

    provider: str
    #: True when the provider was chosen automatically (the one listing the most GPUs).
    auto: bool
    usd_per_gpu_hour: Mapping[str, float]
    #: GPU -> provider its price came from (the basis' provider, or the GPU's default's).
    provider_of: Mapping[str, str]
    #: GPUs the basis' provider does not list, priced from their default (another basis).
    mixed: tuple[str, ...]


def choose_provider(catalog: Mapping[str, Accelerator], gpu_ids: list[str] | tuple[str, ...]) -> str:
    """The provider that lists the most of `gpu_ids`; ties go to the earlier of
    :data:`PRICE_PROVIDERS` (aws, azure, gcp, oracle, neocloud, custom)."""
    counts = {p: sum(1 for g in gpu_ids if p in catalog[g].prices) for p in PRICE_PROVIDERS}
    return max(PRICE_PROVIDERS, key=lambda p: (counts[p], -PRICE_PROVIDERS.index(p)))


def price_basis(
    catalog: Mapping[str, Accelerator], gpu_ids: list[str] | tuple[str, ...], provider: str | None = None
) -> PriceBasis:
    """Each of `gpu_ids` priced under one `provider` (None: :func:`choose_provider`): its price
    on that provider's list where it has one, else its default price, and then it is listed in
    `mixed` as priced from another basis. ValueError for an unknown provider."""
    auto = provider is None
    if provider is None:
        provider = choose_provider(catalog, gpu_ids)
    elif provider not in PRICE_PROVIDERS:
        raise ValueError(f"unknown price provider {provider!r} (allowed: {', '.join(PRICE_PROVIDERS)})")
    prices: dict[str, float] = {}
    provider_of: dict[str, str] = {}
    for g in gpu_ids:
        acc = catalog[g]
        if provider in acc.prices:
            prices[g], provider_of[g] = acc.prices[provider], provider
        else:
            prices[g], provider_of[g] = acc.usd_per_gpu_hour, acc.price_provider
    mixed = tuple(g for g in gpu_ids if provider_of[g] != provider)
    return PriceBasis(provider, auto, MappingProxyType(prices), MappingProxyType(provider_of), mixed)


# --------------------------------------------------------------------------- internals


def _normalize(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@lru_cache(maxsize=1)
def _shipped_text() -> str:
    return resources.files(_DATA_PACKAGE).joinpath(*_DATA_FILE).read_text(encoding="utf-8")


def _shipped_raw() -> dict[str, dict[str, Any]]:
    # Parsed fresh from the cached text so that callers can mutate the result freely.
    return _parse_document(_shipped_text(), _SHIPPED_ORIGIN, default_source=None)


@lru_cache(maxsize=1)
def _shipped_catalog() -> Mapping[str, Accelerator]:
    return MappingProxyType(_build_catalog(_shipped_raw(), _SHIPPED_ORIGIN))


def _parse_document(text: str, origin: str, *, default_source: str | None) -> dict[str, dict[str, Any]]:
    """YAML text -> {entry id: {field: normalized value}} with per-field checks."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin}: not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ValueError(f"{origin}: top level must be a mapping of accelerator id -> fields, got {type(doc).__name__}")
    entries: dict[str, dict[str, Any]] = {}
    for key, raw in doc.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{origin}: accelerator ids must be non-empty strings, got {key!r}")
        if key.startswith("_"):
            continue  # metadata such as _meta
        if not isinstance(raw, Mapping):
            raise ValueError(f"{origin}: accelerator {key!r} must be a mapping of fields, got {type(raw).__name__}")
        entries[key] = _parse_entry(key, raw, origin, default_source)
    return entries


def _parse_entry(entry: str, raw: Mapping[Any, Any], origin: str, default_source: str | None) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for fname, value in raw.items():
        if fname not in _ALL_FIELDS:
            expected = ", ".join(sorted(_ALL_FIELDS))
            raise ValueError(
                f"{origin}: accelerator {entry!r}, field {fname!r}: unknown field (expected one of: {expected})"
            )
        if fname in NUMERIC_FIELDS:
            parsed[fname] = _parse_record(entry, fname, value, origin, default_source)
        elif fname == "vendor":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{origin}: accelerator {entry!r}, field 'vendor': must be a non-empty string")
            parsed[fname] = value.strip().lower()
        elif fname == "purchase_scope":
            if value is not None and (not isinstance(value, str) or value.strip().lower() not in PURCHASE_SCOPES):
                raise ValueError(
                    f"{origin}: accelerator {entry!r}, field 'purchase_scope': must be one of "
                    f"{', '.join(PURCHASE_SCOPES)}, got {value!r}"
                )
            parsed[fname] = None if value is None else value.strip().lower()
        elif fname == _PRICES_FIELD:
            parsed[fname] = _parse_prices(entry, value, origin, default_source)
        elif fname == "aliases":
            parsed[fname] = _parse_aliases(entry, value, origin)
        else:  # free text
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{origin}: accelerator {entry!r}, field {fname!r}: must be text")
            parsed[fname] = value
    return parsed


def _parse_prices(entry: str, value: Any, origin: str, default_source: str | None) -> dict[str, dict[str, Any]]:
    """`prices: {provider: record}` -> {provider: normalized record}; null values are dropped."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{origin}: accelerator {entry!r}, field 'prices': must be a mapping of provider -> price record"
        )
    out: dict[str, dict[str, Any]] = {}
    for provider, record in value.items():
        key = str(provider).strip().lower()
        if key not in PRICE_PROVIDERS:
            raise ValueError(
                f"{origin}: accelerator {entry!r}, field 'prices': unknown provider {provider!r} "
                f"(allowed: {', '.join(PRICE_PROVIDERS)})"
            )
        parsed = _parse_record(entry, f"prices.{key}", record, origin, default_source)
        if parsed["value"] is not None:
            out[key] = parsed
    return out


def _parse_aliases(entry: str, value: Any, origin: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) and a.strip() for a in value):
        raise ValueError(f"{origin}: accelerator {entry!r}, field 'aliases': must be a list of non-empty strings")
    return tuple(a.strip() for a in value)


def _parse_record(entry: str, fname: str, value: Any, origin: str, default_source: str | None) -> dict[str, Any]:
    """Bare number or {value, source, date, ...} -> normalized record."""
    where = f"{origin}: accelerator {entry!r}, field {fname!r}"
    if isinstance(value, Mapping):
        unknown = set(value) - _RECORD_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown record key(s) {sorted(map(str, unknown))} (expected {sorted(_RECORD_KEYS)})"
            )
        if "value" not in value:
            raise ValueError(f"{where}: record has no 'value' key")
        record = {k: value.get(k) for k in _RECORD_KEYS}
    else:
        record = {k: None for k in _RECORD_KEYS}
        record["value"] = value
    record["value"] = _coerce_number(where, fname, record["value"])
    for text_key in ("source", "note", "confidence"):
        text = record[text_key]
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: {text_key!r} must be text, got {type(text).__name__}")
    date = record["date"]
    if isinstance(date, _dt.date | _dt.datetime):
        record["date"] = date.isoformat()
    elif date is not None and not isinstance(date, str | int):
        raise ValueError(f"{where}: 'date' must be text, got {type(date).__name__}")
    elif isinstance(date, int):
        record["date"] = str(date)
    if record["value"] is not None and not (record["source"] or "").strip():
        record["source"] = default_source
    return record


def _coerce_number(where: str, fname: str, value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: must be finite, got {value!r}")
    if number <= 0:
        raise ValueError(f"{where}: must be positive, got {value!r}")
    if fname in _INT_FIELDS:
        if not number.is_integer():
            raise ValueError(f"{where}: must be a whole number of GPUs, got {value!r}")
        return int(number)
    return number


def _raw_name_index(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for key, entry in entries.items():
        for name in (key, *entry.get("aliases", ())):
            index.setdefault(_normalize(name), key)
    return index


def _build_catalog(entries: Mapping[str, Mapping[str, Any]], origin: str) -> dict[str, Accelerator]:
    catalog: dict[str, Accelerator] = {}
    owner: dict[str, str] = {}
    for key, entry in entries.items():
        acc = _build_accelerator(key, entry, origin)
        for name in acc.names:
            norm = _normalize(name)
            other = owner.get(norm)
            if other is not None and other != key:
                raise ValueError(
                    f"{origin}: accelerator {key!r}, field 'aliases': name {name!r} is already "
                    f"used by accelerator {other!r}"
                )
            owner[norm] = key
        catalog[key] = acc
    return catalog


def _build_accelerator(key: str, entry: Mapping[str, Any], origin: str) -> Accelerator:
    vendor = entry.get("vendor")
    if not vendor:
        raise ValueError(f"{origin}: accelerator {key!r}, field 'vendor': missing")
    for fname in REQUIRED_FIELDS:
        record = entry.get(fname)
        if record is None or record.get("value") is None:
            raise ValueError(f"{origin}: accelerator {key!r}, field {fname!r}: required field is missing or null")

    def value(fname: str) -> Any:
        record = entry.get(fname)
        return None if record is None else record.get("value")

    sources: dict[str, str] = {}
    for fname in NUMERIC_FIELDS:
        record = entry.get(fname)
        if record is None or record.get("value") is None:
            continue
        sources[fname] = _source_text(record)

    peak = {dtype: float(value(f)) for f, dtype in FLOP_FIELDS.items() if value(f) is not None}
    seen = {_normalize(key)}
    aliases: list[str] = []
    for alias in entry.get("aliases", ()):
        if _normalize(alias) not in seen:
            seen.add(_normalize(alias))
            aliases.append(alias)
    scaleout = value("scaleout_bw_bytes_per_s")
    purchase = value("purchase_usd")
    default = entry["usd_per_gpu_hour"]
    provider = "custom" if entry.get(_CUSTOM_PRICE) else classify_price_source(default.get("source") or "")
    records = {provider: default, **(entry.get(_PRICES_FIELD) or {})}
    prices = {p: float(r["value"]) for p, r in records.items()}
    price_sources = {p: _source_text(r) for p, r in records.items()}
    sources["usd_per_gpu_hour"] = price_sources[provider]
    return Accelerator(
        id=key,
        vendor=str(vendor),
        aliases=tuple(aliases),
        peak_flops=MappingProxyType(peak),
        hbm_bytes=float(value("hbm_bytes")),
        hbm_bw_bytes_per_s=float(value("hbm_bw_bytes_per_s")),
        scaleup_bw_bytes_per_s=float(value("scaleup_bw_bytes_per_s")),
        scaleup_domain=int(value("scaleup_domain")),
        scaleout_bw_bytes_per_s=None if scaleout is None else float(scaleout),
        gpus_per_node=int(value("gpus_per_node")),
        tdp_w=float(value("tdp_w")),
        usd_per_gpu_hour=prices[provider],
        purchase_usd=None if purchase is None else float(purchase),
        sources=MappingProxyType(sources),
        prices=MappingProxyType(prices),
        price_sources=MappingProxyType(price_sources),
        price_provider=provider,
        purchase_scope=entry.get("purchase_scope") if purchase is not None else None,
    )


def _source_text(record: Mapping[str, Any]) -> str:
    source = (record.get("source") or "").strip() or "unsourced"
    date = str(record.get("date") or "").strip()
    return f"{source} ({date})" if date else source
