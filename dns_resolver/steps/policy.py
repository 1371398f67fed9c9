"""Per-client policies: which client gets which rules, and the verdict under them.

A policy (`[policies.NAME]`, docs/policies.md) names the categories it blocks, its own
allow/block names, block mode, safe search, schedules, allowances and bypass prevention.
`PolicyTable` maps a query to a policy and decides:

    ClientID of an encrypted transport (TLS server name, DoH path; only from the policy's
      `client_id_networks` when it lists any)
      > client-id option (MAC 65001 / CPE-ID 65074, from a trusted forwarder)
      > EDNS Client Subnet (from a trusted forwarder)
      > the subscriber holding the source address (`[subscribers]`, docs/subscribers.md)
      > source address (most specific network wins)
      > the `default` policy

and then, for the policy: bypass canaries -> safe-search rewrites / unsafe engines -> the
policy's own names -> the matcher with the policy's current categories -> allowances.

Category masks change only at schedule boundaries, so the table keeps each policy's
current mask with the instant it stops being valid (`valid_until`) and recomputes on the
first query after it (one float comparison per query). `fast_view()` exports the same
state as plain values for the Cython fast path (docs/policy-fastpath-contract.md).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dns_resolver.steps import bypass, safesearch
from dns_resolver.steps.allowance import AllowanceStore
from dns_resolver.steps.blocking import Blocker
from dns_resolver.steps.schedule import Schedule, Window, local_day
from dns_resolver.wire import Edns, Query
from fdconfig import BlockingConfig, PoliciesConfig, PolicyConfig
from filtercore.errors import InvalidNameError
from filtercore.verdict import NO_MATCH, Action, RuleKind, Verdict

log = logging.getLogger(__name__)

OPTION_ECS = 8  # RFC 7871
OPTION_MAC = 65001  # dnsmasq --add-mac (raw 6 bytes; base64 or text with =base64/=text)
OPTION_CPE_ID = 65074  # dnsmasq --add-cpe-id (an opaque string)
PUNT_OPTIONS = (OPTION_ECS, OPTION_MAC, OPTION_CPE_ID)

SECURITY_CATEGORIES = frozenset({"malware-phishing"})
"""Blocks of these say EDE 15 (Blocked: operator security); other policy blocks say 17
(Filtered: the policy chose to filter them)."""

ALL_MASK = (1 << 64) - 1
_MEMO_LIMIT = 65536

# Verdict categories of the policy layer's own blocks (they are not list categories).
UNSAFE_SEARCH = "unsafe-search"
POLICY_ENTRY = "policy"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def policy_cache_key(query: Query, index: int, mask: int) -> tuple[Any, ...]:
    """The cache key under policies: answers are inspected with the policy's mask."""
    return (query.qname, query.qtype, query.qclass, query.do, index, mask)


def parse_ecs(data: bytes) -> Network | None:
    """The client network of an ECS option (RFC 7871 6), or None if malformed."""
    if len(data) < 4:
        return None
    family = int.from_bytes(data[:2], "big")
    prefix = data[2]
    address = data[4:]
    size = {1: 4, 2: 16}.get(family)
    if size is None or prefix > size * 8 or len(address) != (prefix + 7) // 8:
        return None
    packed = address + bytes(size - len(address))
    try:
        return ipaddress.ip_network((packed, prefix), strict=False)
    except ValueError:
        return None


def parse_mac(data: bytes) -> str | None:
    """A MAC address from dnsmasq's add-mac option: raw, `=base64` or `=text` encoding."""
    raw: bytes | None = None
    if len(data) == 6:
        raw = data
    elif len(data) == 8:
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            return None
    elif len(data) == 17:
        try:
            raw = bytes.fromhex(data.decode("ascii").replace(":", "").replace("-", ""))
        except ValueError:
            return None
    if raw is None or len(raw) != 6:
        return None
    return ":".join(f"{b:02x}" for b in raw)


class Decision(NamedTuple):
    """What the policy layer decided for one query.

    `action`: "block" (answer with `blocker`), "canary" (NXDOMAIN/NODATA via `blocker`),
    "rewrite" (CNAME to `target`), "allow" (`verdict` is an explicit allow: no inspection)
    or "pass" (not listed for this policy: resolve and inspect).
    """

    action: str
    verdict: Verdict
    blocker: Blocker | None = None
    note: str = ""
    target: str = ""


class Selection(NamedTuple):
    """The policy that applies to a query and who the client is (for allowances)."""

    policy: Policy
    client: str  # "id:..", "mac:..", "cpe:..", "ecs:NET", "subscriber:ID" or the address
    via: str  # "clientid", "client-id", "ecs", "subscriber", "address" or "default"
    lists_id: int = 0  # the subscriber's own lists (subscribers.service), 0: none


@dataclass(frozen=True)
class FastPolicy:
    """One policy as the fast path needs it (docs/policy-fastpath-contract.md)."""

    name: str
    mask: int
    punt_mask: int
    punt_names: frozenset[str]
    mode: str
    ttl: int
    ipv4: bytes
    ipv6: bytes
    ede_code: int
    security_mask: int


@dataclass(frozen=True)
class FastPolicyView:
    """The policy table as plain values for C (docs/policy-fastpath-contract.md)."""

    version: int
    valid_until: float
    categories: tuple[str, ...]
    networks: list[tuple[int, bytes, int, int]]
    default_index: int
    trusted_forwarders: list[tuple[int, bytes, int]]
    punt_options: tuple[int, ...]
    policies: list[FastPolicy]
    # ClientIDs of encrypted transports: (ClientID, policy index), and each policy's
    # client_id_networks as (family, packed network, prefix, policy index)
    client_ids: list[tuple[str, int]] = field(default_factory=list)
    client_id_networks: list[tuple[int, bytes, int, int]] = field(default_factory=list)


SUBSCRIBER_LIST = "subscriber"
"""Category and list a subscriber's own allow/block names decide with."""


def _synthetic(category: str, list_name: str, rule: str, action: Action = Action.BLOCK) -> Verdict:
    return Verdict(
        action, category=category, list=list_name, rule=rule, matched=rule, kind=RuleKind.DOMAIN
    )


class Policy:
    """One compiled policy: its config, masks and blockers for the current lists."""

    def __init__(self, index: int, config: PolicyConfig, blocking: BlockingConfig) -> None:
        self.index = index
        self.config = config
        self.name = config.name
        self.blocking = blocking
        self.mode = config.mode or blocking.mode
        self.ttl = blocking.ttl if config.ttl is None else config.ttl
        self.schedule = Schedule([], config.timezone)  # rebuilt by bind() with category bits
        self.rewrites = safesearch.rewrites(search=config.safe_search, youtube=config.youtube)
        self.unsafe = (
            frozenset(safesearch.UNSAFE_ENGINES) if config.block_unsafe_search else frozenset()
        )
        own: dict[str, Verdict] = {}
        for name in config.block_domains:
            own[name] = _synthetic(POLICY_ENTRY, f"policy:{self.name}", name)
        for name in config.allow_domains:  # an allow beats a block of the same name
            own[name] = _synthetic(POLICY_ENTRY, f"policy:{self.name}", name, Action.ALLOW)
        self.own = own
        self.allowance_limits = {a.category: a.minutes for a in config.allowances}
        self.punt_names = frozenset(
            set(self.rewrites)
            | set(self.unsafe)
            | set(own)
            | (set(bypass.CANARIES) if config.bypass_prevention else set())
        )
        self.canary_verdicts: dict[str, Verdict] = {}
        # Set by bind() / refresh():
        self.categories: tuple[str, ...] = ()
        self.base_mask = 0
        self.allowance_mask = 0
        self.mask = 0
        self.punt_mask = 0
        self.names: tuple[str, ...] | None = None  # categories to check; None = all
        self.check_names: tuple[str, ...] | None = None  # plus allowance categories
        self.current: frozenset[str] = frozenset()
        self.notes: dict[str, str] = {}  # category -> the schedule window that blocks it
        self.blocker = self._blocker(())
        self.nxdomain = Blocker("nxdomain", ttl=self.ttl, filtered_categories=("filter-bypass",))
        self.nodata = Blocker("nodata", ttl=self.ttl, filtered_categories=("filter-bypass",))
        self.note = f"policy={self.name}"
        # The console's temporary switches (`PolicyTable.pause` / `block_now`): until when
        # filtering is off, and category -> until when it is blocked whatever the schedule.
        self.paused_until = 0.0
        self.blocked_until: dict[str, float] = {}

    def bind(self, categories: Sequence[str], list_categories: Mapping[str, Iterable[str]]) -> None:
        """Compute masks against the matcher's category bits (after every list load)."""
        self.categories = tuple(categories)
        bit = {name: 1 << i for i, name in enumerate(self.categories)}

        def mask_of(names: Iterable[str]) -> int:
            # A category no loaded list provides has no bit: nothing of it can be blocked.
            out = 0
            for n in names:
                out |= bit.get(n, 0)
            return out

        cfg = self.config
        wanted = set(cfg.block)
        for list_name in cfg.lists:
            wanted.update(list_categories.get(list_name, ()))
        if cfg.bypass_prevention:
            wanted.add(bypass.BYPASS_CATEGORY)
        self.allowance_mask = mask_of(self.allowance_limits)
        base = ALL_MASK if cfg.block_all else mask_of(wanted)
        # An allowance category is allowed-with-a-budget, so it is not blocked outright;
        # a schedule window that blocks it still does.
        self.base_mask = base & ~self.allowance_mask
        windows = [
            Window(
                frozenset(w.days),
                w.start,
                w.end,
                mask_of(w.block),
                mask_of(w.allow),
                w.name or f"{_clock_text(w.start)}-{_clock_text(w.end)}",
            )
            for w in cfg.schedule
        ]
        self.schedule = Schedule(windows, cfg.timezone)
        self.blocker = self._blocker(self.categories)

    def _blocker(self, categories: Iterable[str]) -> Blocker:
        """The policy's block answers: EDE 17 (Filtered) except for security categories."""
        filtered = (set(categories) | {UNSAFE_SEARCH, POLICY_ENTRY}) - SECURITY_CATEGORIES
        return Blocker(
            self.mode,
            ipv4=self.blocking.ipv4,
            ipv6=self.blocking.ipv6,
            ttl=self.ttl,
            filtered_categories=filtered,
        )

    def refresh(self, now: float) -> tuple[bool, float]:
        """Recompute the current mask; (changed, valid until)."""
        mask, active = self.schedule.apply(self.base_mask, now)
        mask, switch_until = self._switches(mask, now)
        changed = mask != self.mask
        self.mask = mask
        self.punt_mask = self.allowance_mask & ~mask & ALL_MASK
        if self.config.block_all and mask == ALL_MASK:
            self.names = None
            self.current = frozenset(self.categories)
        else:
            self.names = tuple(c for i, c in enumerate(self.categories) if mask >> i & 1)
            self.current = frozenset(self.names)
        punt = tuple(c for i, c in enumerate(self.categories) if self.punt_mask >> i & 1)
        self.check_names = self.names if not punt or self.names is None else self.names + punt
        self.notes = {}
        for window in active:
            for i, c in enumerate(self.categories):
                if window.block_mask >> i & 1:
                    self.notes[c] = f"schedule={window.name}"
        for c, until in self.blocked_until.items():
            if until > now and self.paused_until <= now:
                self.notes[c] = "block-now"
        return changed, min(self.schedule.next_change(now), switch_until)

    def _switches(self, mask: int, now: float) -> tuple[int, float]:
        """`mask` under the console's pause and block-now switches; (mask, when the next one
        ends). A pause wins over a block-now: filtering is off, as the teacher asked."""
        until = math.inf
        for category, end in list(self.blocked_until.items()):
            if end <= now:
                del self.blocked_until[category]
            elif category in self.categories:
                mask |= 1 << self.categories.index(category)
                until = min(until, end)
        if self.paused_until > now:
            return 0, min(until, self.paused_until)
        return mask, until


def _clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class PolicyTable:
    """All policies, the client mapping and the time-dependent state.

    Args:
        config: the `[policies]` / `[clients]` configuration (must be enabled).
        blocking: the `[blocking]` section (ip-mode addresses).
        categories: the matcher's categories (bit order).
        list_categories: list name -> the categories its entries carry.
        allowances: where allowance minutes are counted (None: allowances never run out,
            only for tests that do not exercise them).
        clock: time source (injected by tests).
    """

    def __init__(
        self,
        config: PoliciesConfig,
        blocking: BlockingConfig,
        categories: Sequence[str],
        list_categories: Mapping[str, Iterable[str]],
        *,
        allowances: AllowanceStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not config.enabled:
            raise ValueError("no policies configured")
        self.config = config
        self.clock = clock
        self.allowances = allowances
        self.policies = [Policy(i, p, blocking) for i, p in enumerate(config.policies)]
        self.by_name = {p.name: p for p in self.policies}
        self.default = self.by_name["default"]
        nets: list[tuple[Network, int]] = [
            (net, p.index) for p in self.policies for net in p.config.clients
        ]
        # Most specific first, so the first containing network is the answer.
        nets.sort(key=lambda item: -item[0].prefixlen)
        self.networks = nets
        self.macs = {m: p for p in self.policies for m in p.config.macs}
        self.cpe_ids = {c: p for p in self.policies for c in p.config.cpe_ids}
        self.client_ids = {c: p for p in self.policies for c in p.config.client_ids}
        self._bound_memo: dict[tuple[str, int], bool] = {}
        self.trusted = config.trusted_forwarders
        self._by_address: dict[str, Policy] = {}
        self._trusted_memo: dict[str, bool] = {}
        self.version = 0
        self.valid_until = -math.inf
        self._subscribers: list[Callable[[FastPolicyView], None]] = []
        self._view: FastPolicyView | None = None
        # subscribers.service.SubscriberView when [subscribers] is on (App sets it)
        self.subscribers: Any = None
        self.bind(categories, list_categories)

    # -- lists and time -------------------------------------------------------------------

    def bind(self, categories: Sequence[str], list_categories: Mapping[str, Iterable[str]]) -> None:
        """Recompute every policy against newly loaded lists (a reload)."""
        self.categories = tuple(categories)
        for policy in self.policies:
            policy.bind(categories, list_categories)
        self.valid_until = -math.inf
        self.refresh(force=True)

    def refresh(self, now: float | None = None, *, force: bool = False) -> bool:
        """Bring the masks up to date at `now`; True if anything changed (callbacks fired)."""
        now = self.clock() if now is None else now
        if now < self.valid_until and not force:
            return False
        changed = force
        until = math.inf
        for policy in self.policies:
            policy_changed, policy_until = policy.refresh(now)
            changed = changed or policy_changed
            until = min(until, policy_until)
        self.valid_until = until
        if changed:
            self.version += 1
            self._view = None
            if self._subscribers:
                view = self.fast_view(now)
                for callback in list(self._subscribers):
                    try:
                        callback(view)
                    except Exception:
                        log.exception("policy change callback failed")
        return changed

    def pause(self, name: str, until: float) -> None:
        """Turn `name`'s filtering off until `until` (UNIX time; now or earlier resumes)."""
        self.by_name[name].paused_until = until
        self.refresh(force=True)

    def block_now(self, name: str, category: str, until: float) -> None:
        """Block `category` for `name` until `until`, whatever its schedule says."""
        policy = self.by_name[name]
        if category not in self.categories:
            raise ValueError(f"no loaded list has the category {category!r}")
        policy.blocked_until[category] = until
        self.refresh(force=True)

    def subscribe(self, callback: Callable[[FastPolicyView], None]) -> None:
        """Call `callback(view)` after every change of the masks."""
        self._subscribers.append(callback)

    # -- who is asking --------------------------------------------------------------------

    def _network_policy(
        self, address: Network | ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> Policy | None:
        for net, index in self.networks:
            if isinstance(address, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                if address.version == net.version and address.subnet_of(net):  # type: ignore[arg-type]
                    return self.policies[index]
            elif address.version == net.version and address in net:
                return self.policies[index]
        return None

    def _is_trusted(self, client: str) -> bool:
        hit = self._trusted_memo.get(client)
        if hit is None:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                hit = False
            else:
                hit = any(ip.version == n.version and ip in n for n in self.trusted)
            if len(self._trusted_memo) >= _MEMO_LIMIT:
                self._trusted_memo.clear()
            self._trusted_memo[client] = hit
        return hit

    def _id_allowed(self, policy: Policy, client: str) -> bool:
        """May `client` use `policy`'s ClientIDs (its `client_id_networks`, if any)?"""
        networks = policy.config.client_id_networks
        if not networks:
            return True
        key = (client, policy.index)
        hit = self._bound_memo.get(key)
        if hit is None:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                hit = False
            else:
                # An IPv4 client of a dual-stack listener is ::ffff:a.b.c.d (as in C).
                ip = getattr(ip, "ipv4_mapped", None) or ip
                hit = any(ip.version == n.version and ip in n for n in networks)
            if len(self._bound_memo) >= _MEMO_LIMIT:
                self._bound_memo.clear()
            self._bound_memo[key] = hit
        return hit

    def select(
        self, client: str, opt: Edns | None = None, client_id: str | None = None
    ) -> Selection:
        """The policy for a query from `client` carrying OPT `opt`, over an encrypted
        transport that read `client_id` (precedence above). An unknown ClientID, or one
        from outside its policy's `client_id_networks`, is ignored: the query gets what
        the rest of the chain gives it."""
        if client_id:
            policy = self.client_ids.get(client_id)
            if policy is not None and self._id_allowed(policy, client):
                return Selection(policy, f"id:{client_id}", "clientid")
        if opt is not None and opt.options and self.trusted and self._is_trusted(client):
            found = self._select_by_options(opt.options)
            if found is not None:
                return found
        if self.subscribers is not None:
            found = self.subscribers.lookup(client)
            if found is not None and found[0] < len(self.policies):
                # The client stays the address: subscribers.allowances finds its holder.
                return Selection(self.policies[found[0]], client, "subscriber", found[1])
        policy = self._by_address.get(client)
        if policy is None:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                policy = self.default
            else:
                policy = self._network_policy(ip) or self.default
            if len(self._by_address) >= _MEMO_LIMIT:
                self._by_address.clear()
            self._by_address[client] = policy
        return Selection(policy, client, "default" if policy is self.default else "address")

    def _select_by_options(self, options: Sequence[tuple[int, bytes]]) -> Selection | None:
        ecs: Network | None = None
        for code, data in options:
            if code == OPTION_MAC:
                mac = parse_mac(data)
                if mac is not None and mac in self.macs:
                    return Selection(self.macs[mac], f"mac:{mac}", "client-id")
            elif code == OPTION_CPE_ID:
                cpe = data.decode("utf-8", "replace")
                if cpe in self.cpe_ids:
                    return Selection(self.cpe_ids[cpe], f"cpe:{cpe}", "client-id")
            elif code == OPTION_ECS:
                ecs = parse_ecs(data)
        if ecs is not None and ecs.prefixlen > 0:
            policy = self._network_policy(ecs)
            if policy is not None:
                return Selection(policy, f"ecs:{ecs}", "ecs")
        return None

    # -- the verdict ----------------------------------------------------------------------

    def decide(
        self, selection: Selection, name: str, matcher: Any, *, count: bool = True
    ) -> Decision:
        """The policy's decision for normalised `name` (lower case, no trailing dot).

        `count=False` (the block page) looks at allowances without spending a minute.
        """
        now = self.clock()
        if now >= self.valid_until:
            self.refresh(now)
        policy = selection.policy
        if selection.lists_id:
            own = self._subscriber_lists(selection, name)
            if own is not None:
                return own
        if name in policy.punt_names or policy.punt_names and self._under(name, policy):
            special = self._special(policy, name)
            if special is not None:
                return special
        try:
            verdict = (
                matcher.check(name, categories=policy.check_names)
                if (policy.check_names is not None)
                else matcher.check(name)
            )
        except InvalidNameError:
            return Decision("pass", NO_MATCH)
        if verdict.action is Action.ALLOW:
            return Decision("allow", verdict)
        if verdict.action is not Action.BLOCK:
            return Decision("pass", verdict)
        if policy.names is None or any(c in policy.current for c in verdict.categories):
            note = policy.note
            extra = policy.notes.get(verdict.category or "")
            if extra:
                note = f"{note} {extra}"
            return Decision("block", verdict, policy.blocker, note)
        return self._allowance(selection, name, verdict, matcher, count)

    def _subscriber_lists(self, selection: Selection, name: str) -> Decision | None:
        """A subscriber's own allow/block names, before its policy (allow wins a tie)."""
        allow, block = self.subscribers.own_lists(selection.lists_id)
        policy = selection.policy
        for suffix in bypass.suffixes(name):
            if suffix in allow:
                verdict = _synthetic(SUBSCRIBER_LIST, SUBSCRIBER_LIST, suffix, Action.ALLOW)
                return Decision("allow", verdict)
            if suffix in block:
                verdict = _synthetic(SUBSCRIBER_LIST, SUBSCRIBER_LIST, suffix)
                return Decision("block", verdict, policy.blocker, policy.note)
        return None

    def _under(self, name: str, policy: Policy) -> bool:
        return any(s in policy.punt_names for s in bypass.suffixes(name))

    def _special(self, policy: Policy, name: str) -> Decision | None:
        """Bypass canaries, safe search, unsafe engines and the policy's own names."""
        if policy.config.bypass_prevention:
            answer = bypass.canary(name)
            if answer is not None:
                verdict = policy.canary_verdicts.get(name)
                if verdict is None:
                    verdict = _synthetic(bypass.BYPASS_CATEGORY, "bypass-prevention", name)
                    if len(policy.canary_verdicts) < 1024:
                        policy.canary_verdicts[name] = verdict
                blocker = policy.nxdomain if answer == bypass.NXDOMAIN else policy.nodata
                return Decision("canary", verdict, blocker, policy.note)
        target = policy.rewrites.get(name)
        if target is not None:
            return Decision("rewrite", NO_MATCH, target=target)
        if name in policy.unsafe:
            verdict = _synthetic(UNSAFE_SEARCH, "unsafe-search", name)
            return Decision("block", verdict, policy.blocker, policy.note)
        if policy.own:
            for suffix in bypass.suffixes(name):
                verdict = policy.own.get(suffix)
                if verdict is not None:
                    if verdict.action is Action.ALLOW:
                        return Decision("allow", verdict)
                    return Decision("block", verdict, policy.blocker, policy.note)
        return None

    def _allowance(
        self, selection: Selection, name: str, verdict: Verdict, matcher: Any, count: bool
    ) -> Decision:
        """A name blocked only by a category under a daily allowance."""
        policy = selection.policy
        category = next((c for c in verdict.categories if c in policy.allowance_limits), None)
        if category is None:  # not reached: the check asked only for these categories
            return Decision("block", verdict, policy.blocker, policy.note)
        limit = policy.allowance_limits[category]
        now = self.clock()
        day, _ = local_day(now, policy.schedule.zone)
        allowed = True
        store = self.allowances
        if selection.via == "subscriber":
            # One allowance per subscriber, on every node and address (subscribers.allowances)
            store = self.subscribers.allowances
        if store is not None:
            if count:
                allowed, _used = store.use(day, selection.client, category, int(now // 60), limit)
            else:
                allowed = store.used(day, selection.client, category) < limit
        if not allowed:
            note = f"{policy.note} allowance={category}:{limit}min-used-up-until-tomorrow"
            return Decision("block", verdict, policy.blocker, note)
        # Within the allowance: decide as if the category were not listed (a shallower
        # entry of a category the policy blocks may still apply).
        rest = matcher.check(name, categories=policy.names or ())
        if rest.action is Action.BLOCK:
            return Decision("block", rest, policy.blocker, policy.note)
        return Decision("allow" if rest.action is Action.ALLOW else "pass", rest)

    def checker(self, policy: Policy, matcher: Any) -> Any:
        """A matcher view that checks with the policy's categories (answer inspection)."""
        return _PolicyChecker(matcher, policy.names)

    # -- the fast path's view -------------------------------------------------------------

    def fast_view(self, now: float | None = None) -> FastPolicyView:
        """The current state as plain values (docs/policy-fastpath-contract.md)."""
        self.refresh(now)
        if self._view is not None:
            return self._view
        security = 0
        for i, c in enumerate(self.categories):
            if c in SECURITY_CATEGORIES:
                security |= 1 << i
        policies = []
        for p in self.policies:
            policies.append(
                FastPolicy(
                    name=p.name,
                    mask=p.mask & ALL_MASK,
                    punt_mask=p.punt_mask,
                    punt_names=p.punt_names,
                    mode=p.mode,
                    ttl=p.ttl,
                    ipv4=_packed(p, p.blocking.ipv4, 4),
                    ipv6=_packed(p, p.blocking.ipv6, 16),
                    ede_code=17,
                    security_mask=security,
                )
            )
        self._view = FastPolicyView(
            version=self.version,
            valid_until=self.valid_until,
            categories=self.categories,
            networks=[
                (net.version, net.network_address.packed, net.prefixlen, index)
                for net, index in self.networks
            ],
            default_index=self.default.index,
            trusted_forwarders=[
                (net.version, net.network_address.packed, net.prefixlen) for net in self.trusted
            ],
            punt_options=PUNT_OPTIONS,
            policies=policies,
            client_ids=[(c, p.index) for c, p in self.client_ids.items()],
            client_id_networks=[
                (net.version, net.network_address.packed, net.prefixlen, p.index)
                for p in self.policies
                for net in p.config.client_id_networks
            ],
        )
        return self._view


def _packed(policy: Policy, address: str, size: int) -> bytes:
    """The address a block answers A/AAAA with in the policy's mode (b"" = NODATA)."""
    if policy.mode == "null":
        return bytes(size)
    if policy.mode == "ip" and address:
        return ipaddress.ip_address(address).packed
    return b""


class _PolicyChecker:
    """`inspect_answer`'s matcher, restricted to a policy's categories."""

    __slots__ = ("matcher", "names")

    def __init__(self, matcher: Any, names: tuple[str, ...] | None) -> None:
        self.matcher = matcher
        self.names = names

    def check(self, name: str) -> Verdict:
        if self.names is None:
            return self.matcher.check(name)
        return self.matcher.check(name, categories=self.names)

    def check_ip(self, address: str) -> Verdict:
        if self.names is None:
            return self.matcher.check_ip(address)
        return self.matcher.check_ip(address, categories=self.names)


def list_categories(matcher: Any) -> dict[str, set[str]]:
    """List name -> categories its entries carry; a tree `ut1` also answers for `ut1/adult`
    etc. under its own name, so a policy can name the whole tree."""
    out: dict[str, set[str]] = {}
    for info in matcher.compiled.lists:
        out.setdefault(info.name, set()).add(info.category)
        if "/" in info.name:
            out.setdefault(info.name.split("/", 1)[0], set()).add(info.category)
    return out


__all__ = [
    "Decision",
    "FastPolicy",
    "FastPolicyView",
    "PUNT_OPTIONS",
    "Policy",
    "PolicyTable",
    "Selection",
    "list_categories",
    "parse_ecs",
    "parse_mac",
    "policy_cache_key",
]
