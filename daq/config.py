"""Service and rig configuration: TOML files parsed into validated models.

Every problem is reported with the file, the key path inside it and the reason, and
all problems of all files are collected before anything starts: an invalid config
never starts half a service.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlparse, urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from daq.acquisition.transports import TRANSPORTS, device_schema, transport_of
from daq.calibration import Instrument, check_instruments
from daq.schema import Limit, Name, SimulationSettings, Strict
from daq.uns.topics import check_level, default_node

log = logging.getLogger(__name__)


class RigBase(Strict):
    """What every rig file has: name, devices, simulation, limits."""

    name: Name
    simulate: bool = False
    description: str = ""
    devices: list[device_schema()] = Field(min_length=1)  # type: ignore[valid-type]
    simulation: SimulationSettings = SimulationSettings()
    limits: dict[str, Limit] = Field(default_factory=dict, description="metric → acceptance limits")
    instruments: list[Instrument] = Field(default_factory=list, description="the sensors behind the channels, "
                                          "with their calibration (daq.calibration)")
    calibration_policy: Literal["refuse", "warn"] = Field(
        default="refuse", description="a run on an overdue calibration: refused (409), or started with a warning")
    METRICS: ClassVar[tuple[str, ...]] = ()

    @field_validator("limits")
    @classmethod
    def _known_metrics(cls, limits: dict[str, Limit]) -> dict[str, Limit]:
        unknown = sorted(set(limits) - set(cls.METRICS))
        if unknown:
            raise ValueError(f"no such metric: {', '.join(unknown)}; metrics are {', '.join(cls.METRICS)}")
        return limits

    def limit_dicts(self) -> dict[str, dict[str, float]]:
        """Limits as the analysis takes them."""
        return {k: v.as_dict() for k, v in self.limits.items()}

    @model_validator(mode="after")
    def _unique_devices(self) -> RigBase:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique; repeated: {', '.join(dup)}")
        for name, transport in TRANSPORTS.items():
            problems = transport.check_rig([d for d in self.devices if d.transport == name])
            if problems:
                raise ValueError("; ".join(problems))
        for f in self.simulation.faults:
            if f.device not in names:
                raise ValueError(f"simulation.faults: no device {f.device!r}; devices: {', '.join(names)}")
        problems = check_instruments(self.instruments, self.devices)
        if problems:
            raise ValueError("; ".join(problems))
        return self


#: a validated rig file: a rig kind's schema (see :mod:`daq.rigs`)
Rig = RigBase


class InfluxSettings(Strict):
    """Where samples go."""

    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    database: Name = Field(default="rigdaq", description="v1: the database")
    username: str | None = Field(default=None, description="v1: user, if auth is on")
    password: str | None = None
    token: str | None = Field(default=None, description="v2: API token")
    org: str | None = Field(default=None, description="v2: organisation")
    bucket: str | None = Field(default=None, description="v2: bucket")
    managed: bool = False
    data_dir: str = "influxdb"
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    commit_interval_s: float = Field(default=0.2, gt=0, le=10,
                                     description="how often gathered lines are fsync'd to the spool")
    spool_max_mb: float = Field(default=2048, gt=0, description="bound of the on-disk spool")
    spool_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    memory_max_mb: float = Field(default=256, gt=0, description="bound of what is held in memory while "
                                 "the spool cannot write to disk (full, I/O error, read-only)")
    retention: str | None = Field(default=None, pattern=r"^([1-9][0-9]*[hdw]|INF)$",
                                  description="v1: how long the database keeps samples (48h, 30d, 52w, INF)")

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSettings:
        if self.api == "v2":
            missing = [k for k in ("token", "org", "bucket") if not getattr(self, k)]
            if missing:
                raise ValueError(f"api = \"v2\" needs {', '.join(missing)}")
            if self.managed:
                raise ValueError("managed = true starts InfluxDB 1.x, which speaks api = \"v1\" only")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"must be an http(s) URL like http://127.0.0.1:8086 (got {v!r})")
        return v.rstrip("/")


class CentralSettings(InfluxSettings):
    """A central InfluxDB for the plant: rollups, decimated streams, cycles and events, not full rate."""

    rollup_s: float = Field(default=1.0, gt=0, le=3600, description="the rollup window (min/max/mean/last/n)")
    decimate_hz: dict[str, float] = Field(default_factory=dict, description="device → rate of a decimated "
                                          "stream (bin means, at most 1000 Hz)")

    @model_validator(mode="after")
    def _central(self) -> CentralSettings:
        if self.managed:
            raise ValueError("managed = true is for the line's own InfluxDB ([storage.influxdb]), not the central one")
        bad = {d: hz for d, hz in self.decimate_hz.items() if not 0 < hz <= 1000}
        if bad:
            raise ValueError(f"decimate_hz must lie in (0, 1000] Hz (got {bad})")
        return self


class StorageSettings(Strict):
    """Storage back ends: the line's InfluxDB (full rate), and optionally a central one (rollups)."""

    influxdb: InfluxSettings | None = None
    central: CentralSettings | None = None


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def canonical_origin(value: str) -> str:
    """``scheme://host[:port]`` of a web origin, lower case, without a default port.

    Raises ValueError for anything that is not an http(s) origin (a path, a query,
    user info or a bad port), the way browsers never send it in ``Origin``.
    """
    u = urlsplit(value.strip())
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    if u.scheme.lower() not in ("http", "https") or not u.hostname:
        raise ValueError(f"must be an origin like https://hmi.example.com:8443 (got {value!r})")
    if u.path not in ("", "/") or u.query or u.fragment or u.username is not None or u.password is not None:
        raise ValueError(f"an origin is scheme://host[:port] only, without path, query or user (got {value!r})")
    scheme, host = u.scheme.lower(), u.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


class ApiSettings(Strict):
    """The HTTP API and operator page."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="web origins (scheme://host[:port]) besides the API's own that may open the live "
                    "WebSocket, e.g. a plant HMI behind a reverse proxy")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        errors: list[str] = []
        out: list[str] = []
        for i, o in enumerate(origins):
            try:
                out.append(canonical_origin(o))
            except ValueError as e:
                errors.append(f"[{i}]: {e}")
        if errors:
            raise ValueError("; ".join(errors))
        return out


class CatalogueSettings(Strict):
    """Runs, cycles and archived cycle samples (any SQLAlchemy URL)."""

    url: str | None = Field(default=None, description="default: SQLite at <data_dir>/catalogue.sqlite")
    archive_samples: bool = Field(default=True, description="keep each cycle's samples, compressed")
    archive_max_mb: float | None = Field(default=None, gt=0,
                                         description="bound of the archived samples: the oldest go first")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError(f"must be an SQLAlchemy URL like sqlite:///var/catalogue.sqlite (got {v!r})")
        return v


class AuthSettings(Strict):
    """Who may use the API: keys with roles (``daq keys create``)."""

    enabled: bool = Field(default=True, description="false: every request is admin (closed lab networks)")


class MqttSettings(Strict):
    """Live data over MQTT: the Unified Namespace topics and, optionally, Sparkplug B (:mod:`daq.uns`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    site: str = Field(default="plant", description="topic level: rigdaq/<site>/<node>/<rig>/…")
    node: str = Field(default_factory=default_node, description="topic level and Sparkplug edge node "
                      "(default: this host's name)")
    client_id: str | None = Field(default=None, description="default: rigdaq-<node> (Sparkplug: …-spb)")
    latest_hz: float = Field(default=20.0, gt=0, le=100, description="readings per rig and second, at most")
    queue_max: int = Field(default=10_000, ge=1, le=1_000_000,
                           description="messages waiting for the broker; beyond, the oldest are dropped")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of state, cycle, verdict and event "
                                  "(latest readings are QoS 0)")
    sparkplug: bool = Field(default=False, description="also publish Sparkplug B (spBv1.0/<group>/…)")
    sparkplug_group: str = "rigdaq"

    @field_validator("site", "node", "sparkplug_group")
    @classmethod
    def _level(cls, v: str, info) -> str:
        return check_level(v, info.field_name)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\0" in v):
            raise ValueError("must be a non-empty string without NUL")
        return v


class AlarmSettings(Strict):
    """Alarms (:mod:`daq.alarms`): an optional webhook told of new alarms."""

    webhook_url: str | None = Field(default=None, description="POSTed a JSON body for each new alarm of at "
                                    "least webhook_min_priority")
    webhook_min_priority: Literal["high", "medium", "low"] = "high"
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_queue_max: int = Field(default=1000, ge=1, le=100_000,
                                   description="alarms waiting for the webhook; beyond, new ones are dropped")
    webhook_retries: int = Field(default=5, ge=0, le=100, description="retries of a failed POST (backoff 0.5 s "
                                 "doubling, at most 30 s)")

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"must be an http(s) URL like https://hooks.example.com/rigdaq (got {v!r})")
        return v


class ServiceSettings(Strict):
    """The service file (``configs/demo.toml``)."""

    name: str = "rigdaq"
    data_dir: str = "var"
    rigs: list[str] = Field(min_length=1, description="rig files, relative to this file")


class ServiceFile(Strict):
    """Top level of the service file."""

    service: ServiceSettings
    api: ApiSettings = ApiSettings()
    storage: StorageSettings = StorageSettings()
    catalogue: CatalogueSettings = CatalogueSettings()
    auth: AuthSettings = AuthSettings()
    mqtt: MqttSettings | None = None
    alarms: AlarmSettings = AlarmSettings()


class Settings(BaseModel):
    """A fully validated configuration: the service file plus its rigs."""

    path: Path
    service: ServiceSettings
    api: ApiSettings
    storage: StorageSettings
    catalogue: CatalogueSettings = CatalogueSettings()
    auth: AuthSettings = AuthSettings()
    mqtt: MqttSettings | None = None
    alarms: AlarmSettings = AlarmSettings()
    rigs: list[Rig]

    @property
    def data_dir(self) -> Path:
        """Where the service keeps its state (relative paths are relative to the config)."""
        p = Path(self.service.data_dir)
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def catalogue_url(self) -> str:
        """The catalogue's database URL (SQLite in the data dir unless configured)."""
        return self.catalogue.url or f"sqlite:///{self.data_dir / 'catalogue.sqlite'}"


class ConfigError(Exception):
    """One or more problems in configuration files; ``problems`` lists them all."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _key_path(loc: tuple, data: object = None) -> str:
    """``devices[0].registers[4] (force).type`` from a pydantic error location.

    List items that have a ``name`` in the raw data are labelled with it.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        elif str(part).startswith("function-") or part in TRANSPORTS:  # a device's discriminator tag
            continue
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _explain(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    inp = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden", "value_error") and not isinstance(
        inp, dict | list
    ):
        msg += f" (got {inp!r})"
    return msg


def _problems(path: Path, exc: ValidationError, data: object = None) -> list[str]:
    return [f"{path}: {_key_path(e['loc'], data)}: {_explain(e)}" for e in exc.errors()]


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None


def load_rig(path: str | Path) -> Rig:
    """Load and validate one rig file, raising :class:`ConfigError` with every problem."""
    from daq.rigs import KINDS  # the kinds' schemas build on RigBase above

    path = Path(path)
    data = _read_toml(path)
    kind = data.get("kind")
    spec = KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ConfigError([f"{path}: kind: must be one of {', '.join(KINDS)} (got {kind!r})"])
    try:
        return spec.schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems(path, e, data)) from None


def load_settings(path: str | Path) -> Settings:
    """Load the service file and all its rigs; every problem of every file is collected."""
    path = Path(path)
    data = _read_toml(path)
    problems: list[str] = []
    try:
        top = ServiceFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems(path, e, data)) from None
    rigs: list[Rig] = []
    for i, rel in enumerate(top.service.rigs):
        rig_path = path.parent / rel
        try:
            rigs.append(load_rig(rig_path))
        except ConfigError as e:
            if rig_path.exists():
                problems.extend(e.problems)
            else:
                problems.append(f"{path}: service.rigs[{i}]: {rel}: file not found")
    names = [r.name for r in rigs]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{path}: service.rigs: rig name {n!r} is used by more than one rig file")
    endpoints: dict[str, str] = {}
    for r in rigs:
        for d in r.devices:
            key = transport_of(d).endpoint(d)  # None: shared by design (units on one line)
            if key is None:
                continue
            if key in endpoints:
                problems.append(f"{path}: rigs: device {r.name}/{d.name} and {endpoints[key]} both use {key}")
            endpoints[key] = f"{r.name}/{d.name}"
    if problems:
        raise ConfigError(problems)
    return Settings(path=path, service=top.service, api=top.api, storage=top.storage,
                    catalogue=top.catalogue, auth=top.auth, mqtt=top.mqtt, alarms=top.alarms,
                    rigs=rigs)
