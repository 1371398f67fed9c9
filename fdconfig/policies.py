"""`[clients]`, `[policies.NAME]` with its `[[schedule]]` windows and `[[allowance]]`s:
per-client policies (docs/policies.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal, get_args

from msgspec import UNSET, Meta, UnsetType

from fdconfig.blocking import MAX_TTL, BlockingConfig, BlockMode, check_ip_mode
from fdconfig.fields import IPNetwork, Table, Where, doc, fill, parse_network
from fdconfig.lists import ListConfig
from fdconfig.local import DEFAULT_TTL, LocalRecord, parse_records
from fdconfig.tls import parse_client_id

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_ALIASES = {"weekdays": DAYS[:5], "weekend": DAYS[5:], "everyday": DAYS}
YouTube = Literal["off", "moderate", "strict"]
YOUTUBE_MODES: tuple[str, ...] = get_args(YouTube)
POLICY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class ClientsTable(Table):
    """How clients behind a forwarder are told apart."""

    trusted_forwarders: Annotated[
        tuple[str, ...],
        doc("CIDRs whose ECS and client-id options (MAC 65001, CPE-ID 65074) choose the policy."),
    ] = ()


class ScheduleTable(Table, kw_only=True):
    """A time window of a policy: categories blocked or allowed from `start` to `end`."""

    days: Annotated[
        tuple[str, ...],
        doc('Days it applies: `mon`..`sun`, `"weekdays"`, `"weekend"` or `"everyday"`.'),
    ] = DAYS
    start: Annotated[str, doc("Start, `HH:MM` local time (the policy's `timezone`).")]
    end: Annotated[
        str, doc("End, `HH:MM` local time; at or before `start`: the window runs past midnight.")
    ]
    block: Annotated[tuple[str, ...], doc("Categories blocked during the window.")] = ()
    allow: Annotated[tuple[str, ...], doc("Categories allowed during the window.")] = ()
    name: Annotated[str, doc("A name for the window, shown in block reasons.")] = ""


class AllowanceTable(Table):
    """A daily time allowance of a category per client."""

    category: Annotated[str, doc("The category the allowance is for.")]
    minutes: Annotated[
        int,
        doc(
            "Minutes a day per client (state in `data_dir/allowances.sqlite`), or per "
            "subscriber (in the subscribers' database, shared by every node).",
            ge=1,
            le=1440,
        ),
    ] = 60


class PolicyTable(Table):
    """One policy: which clients it applies to and what it blocks."""

    clients: Annotated[
        tuple[str, ...],
        doc("Networks mapped to the policy (most specific wins; not allowed on `default`)."),
    ] = ()
    macs: Annotated[
        tuple[str, ...], doc("MAC addresses from a trusted forwarder's EDNS option.")
    ] = ()
    cpe_ids: Annotated[tuple[str, ...], doc("CPE-IDs from a trusted forwarder's EDNS option.")] = ()
    client_ids: Annotated[
        tuple[str, ...],
        doc(
            "ClientIDs of devices on encrypted transports (the label below `tls.server_name` "
            "in DoT/DoQ, `/dns-query/ID` in DoH). A name the device presents, not a secret: "
            "use random IDs. See [policies.md](policies.md#who-is-asking)."
        ),
    ] = ()
    client_id_networks: Annotated[
        tuple[str, ...],
        doc(
            "CIDRs this policy's `client_ids` count from; from any other address the "
            "ClientID is ignored. Empty: from everywhere."
        ),
    ] = ()
    block: Annotated[tuple[str, ...], doc("Categories blocked.")] = ()
    lists: Annotated[tuple[str, ...], doc("`[[lists]]` entries blocked, by name.")] = ()
    allow_domains: Annotated[
        tuple[str, ...], doc("Names the policy allows (wins over lists).")
    ] = ()
    block_domains: Annotated[
        tuple[str, ...], doc("Names the policy blocks (wins over lists).")
    ] = ()
    mode: Annotated[
        BlockMode | UnsetType,
        doc("How blocks are answered (as `blocking.mode`).", default_text="`[blocking]`'s"),
    ] = UNSET
    ttl: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_TTL)] | UnsetType,
        doc("TTL of block answers.", default_text="`[blocking]`'s"),
    ] = UNSET
    child: Annotated[
        bool | UnsetType,
        doc(
            "A child policy: bypass prevention defaults on.",
            default_text="true if `block` has `adult`",
        ),
    ] = UNSET
    bypass_prevention: Annotated[
        bool | UnsetType,
        doc(
            "Block DoH canary, Private Relay, `resolver.arpa`, `filter-bypass`.",
            default_text="`child`",
        ),
    ] = UNSET
    safe_search: Annotated[bool, doc("Google, Bing, DuckDuckGo, Ecosia, Pixabay forced safe.")] = (
        False
    )
    youtube: Annotated[
        YouTube, doc('YouTube restricted mode: `"off"`, `"moderate"` or `"strict"`.')
    ] = "off"
    block_unsafe_search: Annotated[bool, doc("Block engines that cannot be forced safe.")] = False
    timezone: Annotated[str, doc("IANA zone of schedules and allowance days.")] = "UTC"
    schedule: Annotated[
        tuple[ScheduleTable, ...], doc("Time windows (`[[policies.NAME.schedule]]`).")
    ] = ()
    allowance: Annotated[
        tuple[AllowanceTable, ...], doc("Daily allowances (`[[policies.NAME.allowance]]`).")
    ] = ()
    rewrite: Annotated[
        dict[str, str],
        doc(
            "Names answered as other names: `{ \"NAME\" = \"TARGET\" }`; NAME and every name "
            "below it are resolved as the same name below TARGET, and the answer is given "
            "back under the asked name."
        ),
    ] = {}
    records: Annotated[
        tuple[str, ...],
        doc(
            "Local records for this policy's clients, as `[local] records`; a name given "
            "here replaces that name's `[local]` records."
        ),
    ] = ()


@dataclass(frozen=True)
class ScheduleConfig:
    """One `[[policies.NAME.schedule]]` window (see `dns_resolver.steps.schedule`)."""

    days: tuple[int, ...]  # 0 = Monday
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight; <= start: runs past midnight
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class AllowanceConfig:
    """One `[[policies.NAME.allowance]]`: `minutes` a day of `category` per client."""

    category: str
    minutes: int


@dataclass(frozen=True)
class PolicyConfig:
    """One `[policies.NAME]` table (docs/policies.md).

    `clients` are networks (most specific wins across policies), `macs` the MAC addresses
    (lower case, colon-separated) and `cpe_ids` the CPE-ID strings that dnsmasq-style
    forwarders add as EDNS options. `mode`/`ttl` None: `[blocking]`'s (also after
    `--block-mode`).
    """

    name: str
    clients: tuple[IPNetwork, ...] = ()
    macs: tuple[str, ...] = ()
    cpe_ids: tuple[str, ...] = ()
    client_ids: tuple[str, ...] = ()
    client_id_networks: tuple[IPNetwork, ...] = ()
    block: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    block_domains: tuple[str, ...] = ()
    mode: str | None = None
    ttl: int | None = None
    child: bool = False
    bypass_prevention: bool = False
    safe_search: bool = False
    youtube: str = "off"
    block_unsafe_search: bool = False
    timezone: str = "UTC"
    schedule: tuple[ScheduleConfig, ...] = ()
    allowances: tuple[AllowanceConfig, ...] = ()
    rewrite: tuple[tuple[str, str], ...] = ()
    records: tuple[LocalRecord, ...] = ()
    block_all: bool = False  # the implicit default policy: every category blocks


@dataclass(frozen=True)
class PoliciesConfig:
    """Per-client policies: `[policies.*]` and `[clients]`. Empty `policies`: no policy
    layer at all (every client gets the lists as `[blocking]` says).

    `state_dir` is the absolute data directory (allowance minutes live there).
    """

    policies: tuple[PolicyConfig, ...] = ()
    trusted_forwarders: tuple[IPNetwork, ...] = ()
    state_dir: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.policies)


def build(
    tables: Mapping[str, PolicyTable],
    clients: ClientsTable,
    where: Where,
    blocking: BlockingConfig,
    lists: Sequence[ListConfig],
    record_ttl: int = DEFAULT_TTL,
) -> PoliciesConfig:
    trusted = where.each("clients.trusted_forwarders", clients.trusted_forwarders, parse_network)
    state_dir = str(where.data_dir)
    if not tables:
        return PoliciesConfig(trusted_forwarders=trusted, state_dir=state_dir)
    known = _known_categories(lists)
    out = [
        _policy(name, table, where, blocking, lists, known, record_ttl)
        for name, table in tables.items()
    ]
    if "default" not in tables:
        # Clients no policy names keep what they had without policies: every list blocks.
        out.append(PolicyConfig(name="default", block_all=True))
    seen: dict[object, str] = {}
    for policy in out:
        for kind, values in (
            ("clients", policy.clients),
            ("macs", policy.macs),
            ("cpe_ids", policy.cpe_ids),
            ("client_ids", policy.client_ids),
        ):
            for value in values:
                other = seen.setdefault((kind, value), policy.name)
                if other != policy.name:
                    raise where.error(
                        f"policies.{policy.name}.{kind}",
                        f"{value} is already mapped to policy {other!r}",
                    )
    return PoliciesConfig(tuple(out), trusted, state_dir)


def _policy(
    name: str,
    table: PolicyTable,
    where: Where,
    blocking: BlockingConfig,
    lists: Sequence[ListConfig],
    known: set[str],
    record_ttl: int = DEFAULT_TTL,
) -> PolicyConfig:
    prefix = f"policies.{name}"
    check_policy_name(name, where)
    list_names = {entry.name or Path(entry.path).name for entry in lists}
    for i, list_name in enumerate(table.lists):
        if list_name not in list_names:
            raise where.error(f"{prefix}.lists[{i}]", f'no [[lists]] entry is named "{list_name}"')
    block = _categories(table.block, f"{prefix}.block", known, where)
    child = "adult" in block if isinstance(table.child, UnsetType) else table.child
    bypass = child if isinstance(table.bypass_prevention, UnsetType) else table.bypass_prevention
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(table.timezone)
    except (ValueError, KeyError, OSError):
        raise where.error(
            f"{prefix}.timezone", f'unknown time zone "{table.timezone}" (like "Europe/Paris")'
        ) from None
    for key in ("clients", "client_ids"):
        if name == "default" and getattr(table, key):
            raise where.error(
                f"{prefix}.{key}", "the default policy applies to every other client"
            )
    if table.client_id_networks and not table.client_ids:
        raise where.error(
            f"{prefix}.client_id_networks", "binds no ClientID: the policy has no client_ids"
        )
    mode = None if isinstance(table.mode, UnsetType) else table.mode
    if mode is not None:
        check_ip_mode(replace(blocking, mode=mode), where.file, f"{prefix}.mode")
    return fill(
        PolicyConfig,
        table,
        name=name,
        clients=where.each(f"{prefix}.clients", table.clients, parse_network),
        macs=where.each(f"{prefix}.macs", table.macs, parse_mac),
        client_ids=tuple(
            dict.fromkeys(where.each(f"{prefix}.client_ids", table.client_ids, parse_client_id))
        ),
        client_id_networks=where.each(
            f"{prefix}.client_id_networks", table.client_id_networks, parse_network
        ),
        block=block,
        allow_domains=where.each(f"{prefix}.allow_domains", table.allow_domains, normalize_domain),
        block_domains=where.each(f"{prefix}.block_domains", table.block_domains, normalize_domain),
        mode=mode,
        ttl=None if isinstance(table.ttl, UnsetType) else table.ttl,
        child=child,
        bypass_prevention=bypass,
        schedule=tuple(
            _window(window, f"{prefix}.schedule[{i}]", known, where)
            for i, window in enumerate(table.schedule)
        ),
        allowances=_allowances(table.allowance, f"{prefix}.allowance", known, where),
        rewrite=tuple(
            (
                where.one(f"{prefix}.rewrite", source, normalize_domain),
                where.one(f"{prefix}.rewrite.{source}", target, normalize_domain),
            )
            for source, target in table.rewrite.items()
        ),
        records=parse_records(table.records, record_ttl, where, f"{prefix}.records"),
    )


def check_policy_name(name: str, where: Where) -> None:
    if not name or not set(name) <= POLICY_NAME_CHARS:
        raise where.error(f"policies.{name}", "a policy name may hold only a-z, 0-9, - and _")


def _window(table: ScheduleTable, key: str, known: set[str], where: Where) -> ScheduleConfig:
    window = fill(
        ScheduleConfig,
        table,
        days=_days(table.days, f"{key}.days", where),
        start=where.one(f"{key}.start", table.start, parse_clock),
        end=where.one(f"{key}.end", table.end, parse_clock),
        block=_categories(table.block, f"{key}.block", known, where),
        allow=_categories(table.allow, f"{key}.allow", known, where),
    )
    if not window.block and not window.allow:
        raise where.error(f"{key}.block", "a window must block or allow at least one category")
    return window


def _allowances(
    tables: Sequence[AllowanceTable], key: str, known: set[str], where: Where
) -> tuple[AllowanceConfig, ...]:
    out: list[AllowanceConfig] = []
    for i, table in enumerate(tables):
        if table.category not in known:
            raise where.error(f"{key}[{i}].category", f'unknown category "{table.category}"')
        if any(a.category == table.category for a in out):
            raise where.error(f"{key}[{i}].category", f'"{table.category}" has two allowances')
        out.append(AllowanceConfig(table.category, table.minutes))
    return tuple(out)


def _known_categories(lists: Sequence[ListConfig]) -> set[str]:
    """Category names a policy may use: the canonical ones and those the lists bring."""
    from filtercore.categories import CategoryMap

    known = set(CategoryMap.load().names)
    for entry in lists:
        known.update(c for c in (entry.category, entry.name) if c)
    return known


def _categories(values: Sequence[str], key: str, known: set[str], where: Where) -> tuple[str, ...]:
    for i, value in enumerate(values):
        if value not in known:
            raise where.error(
                f"{key}[{i}]", f'unknown category "{value}" (one of {", ".join(sorted(known))})'
            )
    return tuple(dict.fromkeys(values))


def normalize_domain(text: str) -> str:
    """A domain as lists and rules store it (filtercore's normalisation)."""
    from filtercore.errors import InvalidNameError
    from filtercore.normalize import normalize_name

    try:
        return normalize_name(text)
    except InvalidNameError as e:
        raise ValueError(str(e)) from None


def parse_mac(text: str) -> str:
    """A MAC address, lower case and colon-separated (`-` separators are accepted)."""
    parts = text.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts
    ):
        raise ValueError(f"{text!r} is not a MAC address (like 02:00:5e:10:00:01)")
    return ":".join(parts)


def parse_clock(text: str) -> int:
    """Minutes after midnight of `HH:MM` (`24:00` is the end of the day).

    Raises:
        ValueError: not a valid `HH:MM`.
    """
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f'"{text}" is not a time of day (HH:MM)')
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise ValueError(f'"{text}" is not a time of day (00:00..24:00)')
    return h * 60 + m


def _days(values: Sequence[str], key: str, where: Where) -> tuple[int, ...]:
    days: list[int] = []
    for i, text in enumerate(values):
        lowered = text.strip().lower()
        names = DAY_ALIASES.get(lowered) or (lowered[:3],)
        for day in names:
            if day not in DAYS:
                raise where.error(
                    f"{key}[{i}]",
                    f'"{text}" is not a day (mon..sun, "weekdays", "weekend" or "everyday")',
                )
            days.append(DAYS.index(day))
    if not days:
        raise where.error(key, "must name at least one day")
    return tuple(sorted(set(days)))
