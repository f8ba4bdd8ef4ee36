"""What every ``daq`` command shares: logging, loading a config, opening its catalogue, who acts."""

from __future__ import annotations

import logging
import math
import os
import re
import sys

log = logging.getLogger(__name__)


DEFAULT_CONFIG = "configs/demo.toml"
EXIT_CONFIG = 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("pymodbus", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy == "pymodbus" else logging.WARNING)


def _load(path: str):
    from daq.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as e:
        print(f"rigdaq: configuration is invalid ({len(e.problems)} problem"
              f"{'s' if len(e.problems) != 1 else ''}):", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return None


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (catalogue and InfluxDB URLs), for printing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):  # not a database URL: mask the userinfo by hand
        return re.sub(r"(//[^/@:]*):[^/]*@", r"\1:***@", url)
    if u.password is None:
        return url  # as written: rendering would re-quote a path's characters
    if u.host and "@" in u.host:  # an unencoded @ in the password
        u = u.set(host=u.host.rpartition("@")[2])
    return u.render_as_string(hide_password=True)


def _catalogue(args):
    from daq.catalogue import Catalogue

    settings = _load(getattr(args, "config_file", None) or args.config)  # the positional file wins
    if settings is None:
        return None, None
    try:
        return settings, Catalogue(settings.catalogue_url)
    except Exception as e:  # a bad URL or an unreachable database: say which
        print(f"rigdaq: cannot open the catalogue at {masked_url(settings.catalogue_url)}: {e}",
              file=sys.stderr)
        return None, None


def _cli_actor() -> str:
    """Who runs this command, for the audit trail: ``cli:<user>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v
