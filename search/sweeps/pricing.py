"""One price basis per comparison: the price table a sweep stores when it starts (which provider's
list each GPU was priced from, and which GPUs had to be priced from another basis), its reading
back for sweeps stored before it had those fields, and the warning the CLI prints.

Cloud: every GPU is priced from one provider's list (`pricing.provider`, or the provider that
lists the most of the sweep's GPUs, `objectives.accelerators.price_basis`); a GPU that provider
does not list keeps its default price and is marked. Owned: every GPU's purchase price should
cover the same scope (`purchase_scope`: the card alone, or its share of a system list price);
where the scopes differ the GPUs whose figure leaves out the server, network and rack share are
marked, and GPUs without a purchase price are excluded with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from objectives.accelerators import PRICE_PROVIDERS, Accelerator, price_basis, price_list_name

NO_PURCHASE_PRICE = "no purchase price in the catalog for owned pricing"
SCOPE_WORDS = {
    "card": "card price only (no server, network or rack share)",
    "system_share": "share of a system list price",
    None: "purchase scope not stated in the catalog",
}


def price_table(
    basis: str,
    provider: str | None,
    catalog: Mapping[str, Accelerator],
    accelerators: list[str],
    prices: Mapping[str, float],
) -> dict[str, Any]:
    """What `start_sweep` stores as the sweep's `price_table`: the basis, each GPU's $/GPU-hour
    (`prices`, as the evaluator priced it), the cloud provider and where each GPU's cloud price
    came from, the GPUs priced from another basis (`mixed`), and for owned pricing each GPU's
    purchase scope and the GPUs excluded for want of a purchase price."""
    cloud = price_basis(catalog, accelerators, provider)
    table = _cloud_fields(catalog, accelerators, cloud.provider, dict(cloud.provider_of))
    table.update(
        basis=basis,
        usd_per_gpu_hour=dict(prices),
        provider_auto=cloud.auto,
        cloud_usd_per_gpu_hour=dict(cloud.usd_per_gpu_hour),
    )
    table["cloud_mixed"] = list(table["mixed"])  # the cloud side of rent vs own, whatever the basis
    if basis == "owned":
        scopes = {g: catalog[g].purchase_scope for g in accelerators}
        excluded = {g: NO_PURCHASE_PRICE for g in accelerators if catalog[g].purchase_usd is None}
        included = [g for g in accelerators if g not in excluded]
        distinct = {scopes[g] for g in included}
        mixed = [g for g in included if scopes[g] != "system_share"] if len(distinct) > 1 else []
        table.update(purchase_scope=scopes, excluded=excluded, mixed=mixed)
    return table


def stored_price_table(
    record_table: Mapping[str, Any] | None, catalog: Mapping[str, Accelerator], accelerators: list[str], basis: str
) -> dict[str, Any]:
    """A stored sweep's price table with every field of `price_table`. A sweep stored before
    sweeps had one price basis was priced at each GPU's default: its provider is the one most of
    its GPUs' defaults come from, and the rest are marked."""
    table = dict(record_table or {})
    if "provider" in table and "provider_of" in table:
        return table
    provider_of = {g: catalog[g].price_provider for g in accelerators}
    counts = {p: sum(1 for v in provider_of.values() if v == p) for p in PRICE_PROVIDERS}
    provider = max(PRICE_PROVIDERS, key=lambda p: (counts[p], -PRICE_PROVIDERS.index(p)))
    fresh = price_table(basis, None, catalog, accelerators, table.get("usd_per_gpu_hour") or {})
    cloud = _cloud_fields(catalog, accelerators, provider, provider_of)
    cloud["cloud_mixed"] = cloud["mixed"]
    if basis == "owned":
        cloud.pop("mixed")
    fresh.update(cloud, cloud_usd_per_gpu_hour={g: catalog[g].usd_per_gpu_hour for g in accelerators})
    fresh.update({k: v for k, v in table.items() if k in ("basis", "usd_per_gpu_hour")})
    return fresh


def _cloud_fields(
    catalog: Mapping[str, Accelerator], accelerators: list[str], provider: str, provider_of: dict[str, str]
) -> dict[str, Any]:
    """provider, provider_of, list_of (whose list: 'AWS', 'Lambda'), list (the basis' list) and
    mixed: the GPUs not priced from the basis' list. Two GPU clouds are two lists: under
    `neocloud` the list most of its GPUs come from is the basis, the others are marked."""
    list_of = {g: price_list_name(catalog[g], provider_of[g]) for g in accelerators}
    on_basis = [list_of[g] for g in accelerators if provider_of[g] == provider]
    main = max(dict.fromkeys(on_basis), key=on_basis.count) if on_basis else price_list_name_of(provider)
    mixed = [g for g in accelerators if provider_of[g] != provider or list_of[g] != main]
    return {"provider": provider, "provider_of": provider_of, "list_of": list_of, "list": main, "mixed": mixed}


def price_list_name_of(provider: str) -> str:
    """A provider's list as a reader says it, without a GPU to name a GPU cloud."""
    names = {"aws": "AWS", "azure": "Azure", "gcp": "Google Cloud", "oracle": "Oracle", "custom": "the price file"}
    return names.get(provider, "a GPU cloud")


def basis_note(table: Mapping[str, Any]) -> str:
    """One sentence on the GPUs priced from another basis ('' when there are none), e.g.
    'H100-PCIe is priced from Lambda's list, MI300X from Azure's; the rest from AWS.'"""
    mixed = list(table.get("mixed") or [])
    if not mixed:
        return ""
    if table.get("basis") == "owned":
        scopes = table.get("purchase_scope") or {}
        parts = [f"{g}: {SCOPE_WORDS.get(scopes.get(g), SCOPE_WORDS[None])}" for g in mixed]
        return (
            "Purchase prices do not cover the same scope: "
            + "; ".join(parts)
            + ". The rest are shares of a system list price (server, network and rack included); no sourced "
            "per-GPU server, network and rack share is in the catalog to add to card prices, so the owned cost "
            "of the GPUs named is understated."
        )
    lists = table.get("list_of") or {}
    parts = [f"{g} from {lists.get(g) or 'another provider'}'s list" for g in mixed]
    rest = "the rest" if len(mixed) < len(table.get("provider_of") or {}) else "none"
    return f"{_join(parts)}; {rest} from {_provider_words(table)}'s list."


def cloud_basis_note(table: Mapping[str, Any]) -> str:
    """`basis_note` of the cloud prices alone (rent vs own compares them with owned costs)."""
    return basis_note({**table, "basis": "cloud", "mixed": table.get("cloud_mixed", table.get("mixed") or [])})


def mixed_basis_warning(table: Mapping[str, Any]) -> str | None:
    """The CLI's warning when a sweep starts with GPUs priced from another basis (None: one basis)."""
    note = basis_note(table)
    if table.get("basis") == "owned":
        return " ".join(n for n in (note, excluded_note(table)) if n) or None
    if not note:
        return None
    how = "chosen: it lists the most of them" if table.get("provider_auto") else "set in the spec"
    return (
        f"prices compare different providers: the sweep prices from {_provider_words(table)}'s list "
        f"(pricing.provider {how}), but {note}"
    )


def excluded_note(table: Mapping[str, Any]) -> str:
    """'' or one sentence naming the GPUs left out of an owned comparison and why."""
    excluded = table.get("excluded") or {}
    if not excluded:
        return ""
    reasons: dict[str, list[str]] = {}
    for g, why in excluded.items():
        reasons.setdefault(why, []).append(g)
    return (
        "Excluded from the owned comparison: "
        + "; ".join(f"{', '.join(gs)} ({why})" for why, gs in reasons.items())
        + "."
    )


def _provider_words(table: Mapping[str, Any]) -> str:
    return table.get("list") or price_list_name_of(table.get("provider") or "")


def _join(parts: list[str]) -> str:
    """'A is priced from X's list' / 'A is priced from X's list, B from Y's list and C from ...'."""
    first, *rest = parts
    gpu, _, where = first.partition(" from ")
    head = f"{gpu} is priced from {where}"
    if not rest:
        return head
    return head + "".join(f", {r}" for r in rest[:-1]) + f" and {rest[-1]}"
