"""optistate: keep AI-infrastructure agents' state in SQLite or PostgreSQL.

::

    import optistate
    store = optistate.connect()                # URL, $OPTISTATE_DATABASE_URL, or ./optistate.db
    agent = store.start_agent("cost", name="Cost Optimizer", version="1.0.0")
    agent.config["cost_threshold_usd"]         # 1000

Plugin authors need only :data:`hookimpl`, :class:`Config` and :class:`Capability`.
"""

from importlib.metadata import PackageNotFoundError, version

from . import errors
from .agent import AgentHandle, Workflow
from .config import ConfigView
from .defaults import AgentType, Capability, Config
from .hookspecs import hookimpl
from .registry import Registry
from .store import Store, connect

try:
    __version__ = version("optistate")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = [
    "AgentHandle",
    "AgentType",
    "Capability",
    "Config",
    "ConfigView",
    "Registry",
    "Store",
    "Workflow",
    "__version__",
    "connect",
    "errors",
    "hookimpl",
]
