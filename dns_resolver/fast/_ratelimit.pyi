from collections.abc import Iterable

from fdconfig.fields import IPNetwork

ACTIONS: tuple[str, str, str]

class RateLimiter:
    action: int
    def __init__(
        self,
        qps: float,
        burst: int,
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 56,
        action: int = 2,
        exempt: Iterable[IPNetwork | str] = (),
        max_networks: int = 65536,
    ) -> None: ...
    def limit(self, client: str, tcp: bool = False) -> tuple[int, str | None]: ...
    def counters(self) -> dict[str, int]: ...
