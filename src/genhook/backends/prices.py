"""What one generation costs, known without building a backend: the API's dry runs use it.

The API process builds no backend (they are the workers' business), yet a dry run states the
credits. The built-in backends' prices are data of the settings: ``procedural`` is free, and
``openai`` costs ``GENHOOK_OPENAI_CREDITS_PER_IMAGE`` a image (what each one's
``estimate_cost`` answers; a test holds the two together). A plugin's price is known only to
the plugin, so that one backend is built (once, from the settings) the first time a plan needs
its price; no plan builds any other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from genhook.backends.base import Backend, BackendRegistry, GenerationRequest, build_backend
from genhook.errors import ErrorCode, GenhookError

if TYPE_CHECKING:
    from genhook.config import Settings

BUILTIN_PRICES: dict[str, Callable[[Settings], float]] = {
    "procedural": lambda settings: 0.0,
    "openai": lambda settings: settings.openai.credits_per_image,
}
"""Credits per image of each built-in backend, from the settings alone."""


class SettingsPrices:
    """Credits per request by backend name: the built-ins' from settings, plugins' when asked."""

    def __init__(self, settings: Settings | None = None) -> None:
        from genhook.config import Settings

        self.settings = settings or Settings()
        self.names = sorted(ep.name for ep in entry_points(group=BackendRegistry.group))
        self._plugins: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def estimate_cost(self, request: GenerationRequest) -> float:
        """The credits of ``request`` on its backend; ``backend_not_configured`` if none."""
        name = request.backend
        if name not in self.names:
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED, f"no generation backend named {name!r}"
            )
        builtin = BUILTIN_PRICES.get(name)
        if builtin is not None:
            return builtin(self.settings)
        return self._plugin(name).estimate_cost(request)

    def _plugin(self, name: str) -> Backend:
        with self._lock:
            if name not in self._plugins:
                (ep,) = entry_points(group=BackendRegistry.group, name=name)
                self._plugins[name] = build_backend(ep.load(), self.settings)
            return self._plugins[name]
