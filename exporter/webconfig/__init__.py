"""--web.config.file, in the Prometheus exporter-toolkit format: TLS, mTLS, basic auth, headers.

load: the file into a WebConfig and an SSL context; watch: the config as it is now, reloads
that never weaken it; basic_auth: the cached bcrypt checks.
"""

from .basic_auth import BasicAuth
from .load import LoadedWebConfig, WebConfig, WebConfigError, load_web_config
from .watch import WebConfigWatcher

__all__ = ["BasicAuth", "LoadedWebConfig", "WebConfig", "WebConfigError", "WebConfigWatcher", "load_web_config"]
