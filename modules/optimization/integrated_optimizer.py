"""Profiles and configuration: shipped defaults, the project's override, the environment.

Precedence, lowest first: ``config/settings.json`` (shipped), the ``"optimization"``
block of the project's ``.claude/settings.json``, then ``CLAUDE_HOOKS_*`` variables.
Every bad value is a ``ConfigError`` naming where it came from and which key.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from .resources import shipped

__all__ = [
    "DEFAULTS_PATH",
    "PROFILE_NAMES",
    "AdaptiveSwitcher",
    "ConfigError",
    "LoadSample",
    "Profile",
    "Retention",
    "Settings",
    "Switch",
    "load_settings",
]

DEFAULTS_PATH: Final = shipped("config", "settings.json")
PROFILE_NAMES: Final = ("latency", "throughput", "balanced", "resource_constrained")
_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Profile:
    """The tunables of one profile (see config/settings.json)."""

    name: str
    min_workers: int
    max_workers: int
    batch_size: int
    batch_wait_ms: int
    cache_size: int
    cache_ttl_s: int
    deadline_ms: int
    client_timeout_ms: int
    idle_timeout_s: int
    breaker_fail_max: int
    breaker_reset_s: int
    process_workers: int
    worker_memory_mb: int
    worker_cpu_s: int
    shm_threshold_bytes: int
    description: str = ""

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], where: str) -> Profile:
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} in profile {name!r}")
        missing = sorted(known - {"description"} - set(data))
        if missing:
            raise ConfigError(f"{where}: profile {name!r} lacks key {missing[0]!r}")
        values = {k: _check_int(f"{where}: profiles.{name}.{k}", v) for k, v in data.items() if k != "description"}
        profile = cls(name=name, description=str(data.get("description", "")), **values)
        return profile.validated(where)

    def with_overrides(self, overrides: Mapping[str, Any], where: str) -> Profile:
        known = {f.name for f in fields(self)} - {"name", "description"}
        for key in overrides:
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r}")
        values: dict[str, Any] = {k: _check_int(f"{where}: {k}", v) for k, v in overrides.items()}
        return replace(self, **values).validated(where)

    def validated(self, where: str) -> Profile:
        if self.min_workers > self.max_workers:
            raise ConfigError(f"{where}: min_workers ({self.min_workers}) is above max_workers ({self.max_workers})")
        return self


def _check_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of its own state the daemon keeps (the "retention" block of config/settings.json)."""

    observer_max_rows: int = 1_000_000  # observer.db keeps the newest this many events
    observer_max_age_days: int = 90  # and none older than this
    journal_max_bytes: int = 16 << 20  # the journal is compacted to what SQLite lacks past this size
    log_max_bytes: int = 5 << 20  # daemon.log rotates at this size
    log_backups: int = 3  # daemon.log.1 .. .N kept

    @classmethod
    def from_mapping(cls, data: Any, where: str, base: Retention | None = None) -> Retention:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be an object")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r}")
        values = {k: _check_int(f"{where}.{k}", v) for k, v in data.items()}
        return replace(base or cls(), **values)


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved configuration for one project."""

    enabled: bool
    adaptive: bool
    debug: bool
    profile: Profile
    profiles: Mapping[str, Profile]
    sources: tuple[str, ...]  # where values came from, lowest precedence first
    validator_files: tuple[Path, ...] = ()  # the project's own @validator modules
    retention: Retention = Retention()

    def switch(self, name: str) -> Settings:
        """The same settings running another profile."""
        if name not in self.profiles:
            raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(self.profiles)}")
        return replace(self, profile=self.profiles[name])


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc})") from None
    except OSError as exc:  # a symlink loop, a directory, no permission: as unusable as bad JSON
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must hold a JSON object")
    return data


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return _check_int(name, int(raw))
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None


def load_settings(
    project_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    defaults_path: Path = DEFAULTS_PATH,
    project_settings: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve the settings for a project (its .claude/settings.json, or project_settings
    when given: what is about to be written there) and environment."""
    env = {} if env is None else env
    if not defaults_path.is_file():
        raise ConfigError(f"{defaults_path}: shipped defaults are missing; reinstall hookopt")
    shipped = _read_json(defaults_path, "shipped settings")
    raw_profiles = shipped.get("profiles")
    if not isinstance(raw_profiles, dict) or not raw_profiles:
        raise ConfigError(f"{defaults_path}: 'profiles' must be a non-empty object")
    profiles = {name: Profile.from_mapping(name, body, str(defaults_path)) for name, body in raw_profiles.items()}
    block: dict[str, Any] = dict(shipped.get("optimization") or {})
    retention = Retention.from_mapping(shipped.get("retention", {}), f"{defaults_path}: retention")
    sources = [str(defaults_path)]

    if project_dir is not None:
        path = project_dir / ".claude" / "settings.json"
        project = dict(project_settings) if project_settings is not None else _read_json(path, "project settings")
        opt = project.get("optimization")
        if opt is not None:
            if not isinstance(opt, dict):
                raise ConfigError(f"{path}: 'optimization' must be an object")
            block.update(opt)
            sources.append(f"{path} (optimization)")
        where = f"{path} (optimization)"
    else:
        where = "optimization"

    env_block: dict[str, Any] = {}
    if (raw := env.get("CLAUDE_HOOKS_OPTIMIZATION")) not in (None, ""):
        env_block["enabled"] = _bool("CLAUDE_HOOKS_OPTIMIZATION", raw)
    if (raw := env.get("CLAUDE_HOOKS_DEBUG")) not in (None, ""):
        env_block["debug"] = _bool("CLAUDE_HOOKS_DEBUG", raw)
    if (raw := env.get("CLAUDE_HOOKS_ADAPTIVE")) not in (None, ""):
        env_block["adaptive"] = _bool("CLAUDE_HOOKS_ADAPTIVE", raw)
    if raw := env.get("CLAUDE_HOOKS_PROFILE"):
        env_block["profile"] = raw
    env_overrides: dict[str, int] = {}
    for var, key in (
        ("CLAUDE_HOOKS_CACHE_SIZE", "cache_size"),
        ("CLAUDE_HOOKS_POOL_SIZE", "max_workers"),
        ("CLAUDE_HOOKS_ASYNC_BATCH_SIZE", "batch_size"),
    ):
        if (value := _env_int(env, var)) is not None:
            env_overrides[key] = value
    if env_block or env_overrides:
        sources.append("environment (CLAUDE_HOOKS_*)")
    block.update(env_block)

    name = block.pop("profile", "balanced")
    if name not in profiles:
        source = "CLAUDE_HOOKS_PROFILE" if "profile" in env_block else f"{where}: profile"
        raise ConfigError(f"{source}: unknown profile {name!r}; choose one of {', '.join(profiles)}")
    enabled = _bool(f"{where}: enabled", block.pop("enabled", True))
    adaptive = _bool(f"{where}: adaptive", block.pop("adaptive", False))
    debug = _bool(f"{where}: debug", block.pop("debug", False))
    if "retention" in block:
        retention = Retention.from_mapping(block.pop("retention"), f"{where}: retention", retention)
    # Observer globs are read by `hookopt install` (observers.py); checked here so a typo is reported.
    observers = block.pop("observers", [])
    if not isinstance(observers, list) or not all(isinstance(g, str) and g.strip() for g in observers):
        raise ConfigError(f"{where}: observers must be a list of non-empty glob strings")
    files = block.pop("validators", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{where}: validators must be a list of file paths")
    root = project_dir if project_dir is not None else Path.cwd()
    validator_files = tuple(root / f for f in files)
    profile = profiles[name].with_overrides(block, where)
    if env_overrides:
        if "max_workers" in env_overrides:
            env_overrides["min_workers"] = min(profile.min_workers, env_overrides["max_workers"])
        profile = profile.with_overrides(env_overrides, "environment")
    return Settings(enabled, adaptive, debug, profile, profiles, tuple(sources), validator_files, retention)


@dataclass(frozen=True, slots=True)
class LoadSample:
    """Load observed over one window."""

    events_per_s: float
    p95_ms: float
    queue_depth: int
    memory_available_mb: float


@dataclass(frozen=True, slots=True)
class Switch:
    """One profile change made by the adaptive mode, with its reason."""

    at: float
    from_profile: str
    to_profile: str
    reason: str


class AdaptiveSwitcher:
    """Choose a profile from observed load; switch only after `patience` agreeing samples.

    Memory pressure wins (resource_constrained), then a high event rate or a deep
    queue (throughput), then slow answers at a low rate (latency), else balanced.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        patience: int = 3,
        high_rate: float = 50.0,
        deep_queue: int = 64,
        slow_p95_ms: float = 50.0,
        low_memory_mb: float = 256.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.patience = patience
        self.high_rate = high_rate
        self.deep_queue = deep_queue
        self.slow_p95_ms = slow_p95_ms
        self.low_memory_mb = low_memory_mb
        self.clock = clock
        self.history: list[Switch] = []
        self._recent: deque[tuple[str, str]] = deque(maxlen=patience)

    def want(self, sample: LoadSample) -> tuple[str, str]:
        """The profile this sample asks for, and why."""
        if sample.memory_available_mb < self.low_memory_mb:
            return "resource_constrained", f"available memory {sample.memory_available_mb:.0f} MB < {self.low_memory_mb:.0f} MB"
        if sample.events_per_s >= self.high_rate:
            return "throughput", f"{sample.events_per_s:.1f} events/s >= {self.high_rate:.0f}"
        if sample.queue_depth >= self.deep_queue:
            return "throughput", f"queue depth {sample.queue_depth} >= {self.deep_queue}"
        if sample.p95_ms > self.slow_p95_ms:
            return "latency", f"p95 {sample.p95_ms:.1f} ms > {self.slow_p95_ms:.0f} ms at {sample.events_per_s:.1f} events/s"
        return "balanced", "load is moderate"

    def observe(self, sample: LoadSample) -> Switch | None:
        """Record a sample; switch profile when the last `patience` samples agree."""
        self._recent.append(self.want(sample))
        target, reason = self._recent[-1]
        current = self.settings.profile.name
        if target == current or len(self._recent) < self.patience:
            return None
        if any(name != target for name, _ in self._recent):
            return None
        self.settings = self.settings.switch(target)
        switch = Switch(self.clock(), current, target, reason)
        self.history.append(switch)
        self._recent.clear()
        return switch
