"""--web.config.file, in the Prometheus exporter-toolkit format: TLS, mTLS, basic auth, headers.

model: WebConfig and its error; load: the file, headers and users; tls: the TLS settings and
the SSL context; watch: the config as it is now, reloads that never weaken it; basic_auth: the
cached bcrypt checks.
"""

from .basic_auth import BasicAuth
from .load import LoadedWebConfig, load_web_config
from .model import WebConfig, WebConfigError
from .watch import WebConfigWatcher

__all__ = ["BasicAuth", "LoadedWebConfig", "WebConfig", "WebConfigError", "WebConfigWatcher", "load_web_config"]
