"""filterdns's configuration: the TOML file of `filterdns serve`, declared one section per
module, checked by msgspec, with a JSON Schema for editors (`filterdns config schema`).

It sits below `dns_resolver`, `listsync`, `reports` and the CLI and imports none of them:
they read the `Config` tree this package builds.

- `fdconfig.fields`: the error type and the shared field types (addresses, CIDRs, durations).
- `fdconfig.server`, `.upstream`, `.cache`, `.blocking`, `.access`, `.metrics`,
  `.querylog`, `.log`, `.admin`, `.reports`, `.lists`, `.policies`, `.blockpage`,
  `.forward`, `.local`: one section each, its declared table, its loaded dataclass and its
  `build`.
- `fdconfig.config`: the whole file (`ConfigTable`) and the whole configuration (`Config`).
- `fdconfig.load`: `load_config`, `default_config` (the bundled lists and the UT1 categories
  by URL), `apply_overrides`, error translation.
- `fdconfig.schema`: the JSON Schema and docs/configuration.md's key tables.
- `fdconfig.show`: the effective configuration as TOML.
"""

from fdconfig.access import DEFAULT_ALLOW, AccessConfig
from fdconfig.admin import AdminConfig
from fdconfig.blocking import BLOCK_MODES, BlockingConfig
from fdconfig.blockpage import BlockPageConfig
from fdconfig.cache import CacheConfig
from fdconfig.config import Config
from fdconfig.console import ConsoleConfig
from fdconfig.fields import COMMAND_LINE, Address, ConfigError, parse_address
from fdconfig.forward import ForwardConfig
from fdconfig.lists import ListConfig
from fdconfig.load import (
    DOWNLOADS_FILE,
    UT1_DOWNLOADS,
    apply_overrides,
    bundled_lists_file,
    default_config,
    load_bundled_lists,
    load_config,
    load_default_sources,
    require_upstreams,
)
from fdconfig.local import LocalConfig, LocalRecord
from fdconfig.log import LoggingConfig
from fdconfig.metrics import MetricsConfig
from fdconfig.policies import AllowanceConfig, PoliciesConfig, PolicyConfig, ScheduleConfig
from fdconfig.querylog import ANONYMIZE_MODES, QueryLogConfig
from fdconfig.reports import ReportsConfig
from fdconfig.server import ServerConfig, default_data_dir
from fdconfig.upstream import DEFAULT_RESOLV_CONF, UpstreamConfig, read_resolv_conf

__all__ = [
    "ANONYMIZE_MODES",
    "BLOCK_MODES",
    "COMMAND_LINE",
    "DEFAULT_ALLOW",
    "DEFAULT_RESOLV_CONF",
    "DOWNLOADS_FILE",
    "AccessConfig",
    "Address",
    "AdminConfig",
    "AllowanceConfig",
    "ConsoleConfig",
    "BlockPageConfig",
    "BlockingConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ForwardConfig",
    "ListConfig",
    "LocalConfig",
    "LocalRecord",
    "LoggingConfig",
    "MetricsConfig",
    "PoliciesConfig",
    "PolicyConfig",
    "QueryLogConfig",
    "ReportsConfig",
    "ScheduleConfig",
    "ServerConfig",
    "UT1_DOWNLOADS",
    "UpstreamConfig",
    "apply_overrides",
    "bundled_lists_file",
    "default_config",
    "default_data_dir",
    "load_bundled_lists",
    "load_config",
    "load_default_sources",
    "parse_address",
    "read_resolv_conf",
    "require_upstreams",
]
