"""The pricing file (``GENHOOK_PRICING_FILE``): credits per output, by backend and model.

The file is YAML, backend to model to prices::

    procedural:
      "*": {per_image: 0}
    openai:
      gpt-image-1: {per_image: 4.0}
    replicate:
      "*": {per_image: 1.0, per_video_second: 10.0}

``"*"`` is any model of that backend; a model's own entry wins over ``"*"`` for each price it
names. ``per_image`` is the credits of each image made, ``per_video_second`` of each second of
video made. Prices are finite numbers, 0 or more; any other key is refused. A bad file is a
:class:`~genhook.config.ConfigError` whose one line names ``GENHOOK_PRICING_FILE``, the line and
the key at fault.

One :class:`Pricing` prices both sides: the dry run's estimate (price x what the plan would
make) and a job's real ``credit_cost`` (price x what each attempt made, quality-check
regenerations included). A backend or model without a price is never run for free: a workflow
that names one is refused when it loads, and one wired from the trigger fails the job with
``backend_not_configured`` before anything is generated. Only ``procedural`` (offline, free)
is 0 when the file does not name it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from genhook.config_values import ConfigError
from genhook.errors import ErrorCode, GenhookError
from genhook.workflow.yamlsrc import Located, YamlSyntaxError, load_located

if TYPE_CHECKING:
    from genhook.backends.base import GenerationRequest, GenerationResult

ANY_MODEL = "*"
FREE_BACKEND = "procedural"
"""The one backend that costs 0 where the file does not price it (it runs offline)."""
PRICE_KEYS = ("per_image", "per_video_second")
Output = Literal["image", "video_seconds"]
"""What an attempt makes: images (counted) and seconds of video."""
KEY_OF: dict[Output, str] = {"image": "per_image", "video_seconds": "per_video_second"}
ACCEPTS = "accepts backend: model: {per_image: CREDITS, per_video_second: CREDITS}"
DIGITS = 6
"""Credits are rounded to this many decimals, as everywhere else in genhook."""


@dataclass(frozen=True)
class Price:
    """The prices of one backend's model (or of ``"*"``); None: not priced for that output."""

    per_image: float | None = None
    per_video_second: float | None = None

    def of(self, output: Output) -> float | None:
        """The price of one unit of ``output`` (an image, a second of video)."""
        value: float | None = getattr(self, KEY_OF[output])
        return value


FREE = Price(per_image=0.0, per_video_second=0.0)


def made(results: Iterable[GenerationResult]) -> dict[str, float]:
    """What generations made: ``{"image": N, "video_seconds": S}`` (the attempt's ``made``)."""
    images, seconds = 0, 0.0
    for result in results:
        output, amount = _output(result.request, result)
        if output == "image":
            images += int(amount)
        else:
            seconds += amount
    return {"image": images, "video_seconds": round(seconds, DIGITS)}


def _output(request: GenerationRequest, result: Any = None) -> tuple[Output, float]:
    """What one request makes (or, given its result, made): one image, or seconds of video.

    A video's seconds are what the result reports (``video_seconds``), else what was asked
    (``options.duration_seconds``)."""
    if request.kind != "video":
        return "image", 1.0
    clip = result.video if result is not None else None
    seconds = clip.duration_seconds if clip is not None else request.duration_seconds
    return "video_seconds", float(seconds)


@dataclass(frozen=True)
class Pricing:
    """A validated, read-only pricing table; ``source`` names where it came from."""

    table: Mapping[str, Mapping[str, Price]] = field(default_factory=dict)
    source: str = "the pricing file"

    def __post_init__(self) -> None:
        frozen = {b: MappingProxyType(dict(models)) for b, models in self.table.items()}
        object.__setattr__(self, "table", MappingProxyType(frozen))

    @classmethod
    def from_mapping(cls, data: Any, source: str = "the pricing file") -> Pricing:
        """A pricing table from parsed YAML (or a literal dict); ConfigError if it is wrong."""
        return cls(_parse(Located(data=data), source), source)

    def unit_price(self, backend: str, model: str, output: Output) -> float | None:
        """Credits per unit of ``output`` on ``backend``/``model``; None where unpriced."""
        models = self.table.get(backend)
        if models is None:
            return 0.0 if backend == FREE_BACKEND else None
        for key in (model, ANY_MODEL):
            entry = models.get(key)
            value = entry.of(output) if entry is not None else None
            if value is not None:
                return value
        return None

    def problem(self, backend: str, model: str, output: Output = "image") -> str | None:
        """Why ``backend``/``model`` cannot be charged for ``output``; None if it can."""
        if self.unit_price(backend, model, output) is not None:
            return None
        return (
            f"backend {backend!r} model {model!r} has no {KEY_OF[output]} price in "
            f"{self.source} (GENHOOK_PRICING_FILE): a paid engine is never run unpriced"
        )

    def price(self, backend: str, model: str, output: Output, amount: float) -> float:
        """Credits of ``amount`` images (or seconds of video) made on ``backend``/``model``.

        Unpriced: ``backend_not_configured`` (a permanent failure, before anything runs)."""
        unit = self.unit_price(backend, model, output)
        if unit is None:
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED, self.problem(backend, model, output)
            )
        return round(unit * amount, DIGITS)

    def estimate_cost(self, request: GenerationRequest) -> float:
        """Credits one generation of ``request`` would cost: what it asks for, priced."""
        output, amount = _output(request)
        return self.price(request.backend, request.model, output, amount)

    def charge(self, result: GenerationResult) -> float:
        """Credits one generation cost: what it made (an image, its seconds of video), priced."""
        output, amount = _output(result.request, result)
        return self.price(result.request.backend, result.request.model, output, amount)


def load_pricing(path: Path) -> Pricing:
    """The pricing file at ``path``, parsed and checked (cached while the file is unchanged)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"GENHOOK_PRICING_FILE: {path} cannot be read ({exc.strerror or exc}); {ACCEPTS}"
        ) from None
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> Pricing:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"GENHOOK_PRICING_FILE: {path} cannot be read ({exc}); {ACCEPTS}"
        ) from None
    try:
        doc = load_located(text)
    except YamlSyntaxError as exc:
        where = f"{path}:{exc.line}" if exc.line else path
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"GENHOOK_PRICING_FILE: {where}: not YAML ({first})") from None
    return Pricing(_parse(doc, path), path)


def shipped_pricing() -> Pricing:
    """The shipped ``presets/pricing.yaml`` (what ``GENHOOK_PRICING_FILE`` replaces)."""
    from genhook.paths import presets_dir

    return load_pricing(presets_dir() / "pricing.yaml")


def _parse(doc: Located, source: str) -> dict[str, dict[str, Price]]:
    """The table of ``doc``; the first problem raises ConfigError naming its line and key."""

    def fail(path: tuple[str | int, ...], message: str) -> ConfigError:
        line = doc.line(path)
        where = f"{source}:{line}" if line else source
        key = ".".join(str(p) for p in path) or "(file)"
        return ConfigError(f"GENHOOK_PRICING_FILE: {where}: {key}: {message}; {ACCEPTS}")

    if doc.duplicates:
        dup, _ = doc.duplicates[0]
        raise fail(dup, "duplicate key")
    data = {} if doc.data is None else doc.data
    if not isinstance(data, Mapping):
        raise fail((), "the file is not a mapping of backends")
    table: dict[str, dict[str, Price]] = {}
    for backend, models in data.items():
        if not isinstance(backend, str) or not backend:
            raise fail((backend,), "a backend name is text")
        if not isinstance(models, Mapping) or not models:
            raise fail((backend,), 'a backend maps model names (or "*") to prices')
        table[backend] = {}
        for model, prices in models.items():
            at = (backend, model)
            if not isinstance(model, str) or not model:
                raise fail(at, 'a model name is text (quote "*")')
            if not isinstance(prices, Mapping) or not prices:
                raise fail(at, "a model maps per_image and/or per_video_second to credits")
            values: dict[str, float] = {}
            for key, value in prices.items():
                if key not in PRICE_KEYS:
                    raise fail((*at, key), f"unknown price key (allowed: {', '.join(PRICE_KEYS)})")
                number = _credits(value)
                if number is None:
                    raise fail(
                        (*at, key), f"{value!r} is not a number of credits (0 or more, finite)"
                    )
                values[key] = number
            table[backend][model] = Price(**values)
    return table


def _credits(value: Any) -> float | None:
    """``value`` as credits: a finite number, 0 or more (booleans and text are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None
