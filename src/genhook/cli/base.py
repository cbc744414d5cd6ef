"""The ``genhook`` command group and what its commands share: JSON output, exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from genhook.catalog import Catalog
from genhook.engine import Engine
from genhook.errors import TemplateError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def load_engine() -> Engine:
    """The engine of this process's settings (exit 2 on a bad setting or template)."""
    from genhook.runtime import load_engine as load

    try:
        return load(load_settings())
    except TemplateError as exc:
        die_template(exc)


def load_catalog() -> Catalog:
    """The workflow catalog of this process's settings, no backend built (exit 2 as above)."""
    from genhook.runtime import load_catalog as load

    try:
        return load(load_settings())
    except TemplateError as exc:
        die_template(exc)


def die_template(exc: TemplateError) -> NoReturn:
    for problem in exc.problems or []:
        click.echo(problem.format(exc.path), err=True)
    if not exc.problems:
        click.echo(str(exc), err=True)
    sys.exit(EXIT_INVALID)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genhook")
def cli() -> None:
    """genhook: a JSON trigger in, finished, quality-checked assets and a completion payload out.

    Start with `genhook workflows list`, then try one workflow on a trigger (paste it as it is,
    from any folder; the assets land in ./assets):

    \b
        genhook run product-image --out assets --input '{"product_id": "SKU-1",
          "product_name": "Linen Shirt", "target_style": "minimal",
          "target_platform": "instagram_feed"}'
    """


def setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("pyvips", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_settings(**overrides: object) -> Any:
    """The settings of this process, the pricing file's content checked too (exit 2 if bad)."""
    from genhook.config import ConfigError, Settings
    from genhook.pricing import load_pricing

    try:
        settings = Settings.from_env(None, **overrides)
        if settings.pricing_file is not None:
            load_pricing(settings.pricing_file)  # a bad file: one line naming its line and key
        return settings
    except ConfigError as exc:
        die_config(exc)


def die_config(exc: Exception) -> NoReturn:
    """One line naming the setting and what it accepts, then exit 2 (never a traceback)."""
    click.echo(f"configuration error: {' '.join(str(exc).split())}", err=True)
    sys.exit(EXIT_INVALID)


def build_runtime(settings: Any) -> Any:
    """The runtime of ``settings``; exit 2 with one line on a bad template or setting, and on a
    store that cannot be opened, migrated or written (a read-only database would only fail
    every trigger later)."""
    from genhook.errors import ErrorCode, GenhookError
    from genhook.runtime import Runtime
    from genhook.store.db import describe

    try:
        runtime = Runtime.build(settings)
    except TemplateError as exc:
        die_template(exc)
    except ValueError as exc:
        die_config(exc)
    except GenhookError as exc:
        if exc.code is not ErrorCode.STORE_UNAVAILABLE:
            raise
        die_store(settings, f"cannot be opened ({describe(exc.__cause__ or exc)})")
    except OSError as exc:  # the SQLite file or a folder of the data dir could not be made
        die_store(settings, f"cannot be opened ({exc.filename}: {exc.strerror})")
    health = runtime.store.health()
    if not health.ok:
        runtime.store.close()
        problem = "cannot be written" if health.answers else "does not answer"
        die_store(settings, f"{problem} ({health.reason})")
    return runtime


def die_store(settings: Any, problem: str) -> NoReturn:
    """One line naming the database, why it cannot serve, and the settings that choose it;
    then exit 2 (never a traceback)."""
    import os

    import sqlalchemy as sa

    url = sa.make_url(settings.database_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:"):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(folder) and not os.access(folder, os.W_OK):
            problem += f", and its folder {folder} is read-only"
    click.echo(
        f"store error: the database {url.render_as_string(hide_password=True)} "
        f"{' '.join(problem.split())}; GENHOOK_DATABASE_URL, or GENHOOK_DATA_DIR for the "
        "default SQLite file, must name a database this process can read and write",
        err=True,
    )
    sys.exit(EXIT_INVALID)
