import json

import pytest

from modules.optimization.integrated_optimizer import (
    DEFAULTS_PATH,
    PROFILE_NAMES,
    AdaptiveSwitcher,
    ConfigError,
    LoadSample,
    load_settings,
)


def write_settings(project, data):
    path = project / ".claude" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_shipped_profiles_have_the_guide_values():
    settings = load_settings()
    assert set(settings.profiles) == set(PROFILE_NAMES)
    balanced = settings.profiles["balanced"]
    assert (balanced.min_workers, balanced.max_workers, balanced.batch_size, balanced.batch_wait_ms) == (4, 16, 100, 50)
    assert settings.profile.name == "balanced" and settings.enabled
    # latency trades batching for speed; resource_constrained keeps everything small
    assert settings.profiles["latency"].batch_wait_ms < balanced.batch_wait_ms
    assert settings.profiles["resource_constrained"].max_workers < balanced.max_workers
    assert settings.profiles["throughput"].batch_size > balanced.batch_size


def test_project_block_overrides_defaults(tmp_path):
    write_settings(tmp_path, {"hooks": {}, "optimization": {"profile": "latency", "cache_size": 123}})
    settings = load_settings(tmp_path)
    assert settings.profile.name == "latency"
    assert settings.profile.cache_size == 123
    assert settings.profile.min_workers == 8


def test_environment_overrides_project(tmp_path):
    write_settings(tmp_path, {"optimization": {"profile": "latency", "cache_size": 123}})
    env = {
        "CLAUDE_HOOKS_PROFILE": "resource_constrained",
        "CLAUDE_HOOKS_CACHE_SIZE": "77",
        "CLAUDE_HOOKS_POOL_SIZE": "2",
        "CLAUDE_HOOKS_ASYNC_BATCH_SIZE": "9",
        "CLAUDE_HOOKS_OPTIMIZATION": "false",
        "CLAUDE_HOOKS_DEBUG": "1",
    }
    settings = load_settings(tmp_path, env)
    p = settings.profile
    assert (p.name, p.cache_size, p.max_workers, p.min_workers, p.batch_size) == ("resource_constrained", 77, 2, 1, 9)
    assert settings.enabled is False and settings.debug is True
    assert "environment (CLAUDE_HOOKS_*)" in settings.sources


def test_pool_size_below_min_workers_lowers_min(tmp_path):
    p = load_settings(tmp_path, {"CLAUDE_HOOKS_POOL_SIZE": "2"}).profile
    assert (p.min_workers, p.max_workers) == (2, 2)


@pytest.mark.parametrize(
    ("project", "env", "message"),
    [
        ({"optimization": {"profile": "turbo"}}, {}, "profile: unknown profile 'turbo'"),
        ({}, {"CLAUDE_HOOKS_PROFILE": "turbo"}, "CLAUDE_HOOKS_PROFILE: unknown profile 'turbo'"),
        ({"optimization": {"cache_size": -1}}, {}, "cache_size must be a positive integer"),
        ({"optimization": {"cache_size": "big"}}, {}, "cache_size must be a positive integer, got 'big'"),
        ({"optimization": {"cache_sise": 10}}, {}, "unknown key 'cache_sise'"),
        ({"optimization": {"enabled": "maybe"}}, {}, "enabled must be true or false"),
        ({"optimization": {"min_workers": 40}}, {}, "min_workers (40) is above max_workers (16)"),
        ({"optimization": []}, {}, "'optimization' must be an object"),
        ({"optimization": {"validators": "checks.py"}}, {}, "validators must be a list of file paths"),
        ({}, {"CLAUDE_HOOKS_CACHE_SIZE": "lots"}, "CLAUDE_HOOKS_CACHE_SIZE must be a positive integer, got 'lots'"),
        ({}, {"CLAUDE_HOOKS_OPTIMIZATION": "perhaps"}, "CLAUDE_HOOKS_OPTIMIZATION must be true or false"),
    ],
)
def test_bad_values_name_the_key(tmp_path, project, env, message):
    write_settings(tmp_path, project)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env)
    assert message in str(info.value)


def test_broken_project_settings_is_a_clear_error(tmp_path):
    path = write_settings(tmp_path, "{ not json")
    with pytest.raises(ConfigError, match="project settings is not valid JSON"):
        load_settings(tmp_path)
    assert path.read_text() == "{ not json"


def test_missing_shipped_defaults_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="shipped defaults are missing"):
        load_settings(defaults_path=tmp_path / "nope.json")


def test_shipped_file_is_the_one_in_config():
    assert DEFAULTS_PATH.parts[-2:] == ("config", "settings.json") and DEFAULTS_PATH.is_file()


def test_switch_to_unknown_profile_is_refused():
    with pytest.raises(ConfigError, match="unknown profile 'x'"):
        load_settings().switch("x")


def sample(rate=5.0, p95=5.0, depth=0, memory=4096.0):
    return LoadSample(rate, p95, depth, memory)


def test_adaptive_switches_after_patience_and_records_why():
    clock = iter(range(100, 200)).__next__
    switcher = AdaptiveSwitcher(load_settings(), patience=3, clock=clock)
    assert switcher.observe(sample(rate=120)) is None
    assert switcher.observe(sample(rate=130)) is None
    switch = switcher.observe(sample(rate=140))
    assert switch is not None
    assert (switch.from_profile, switch.to_profile) == ("balanced", "throughput")
    assert "140.0 events/s" in switch.reason
    assert switcher.settings.profile.name == "throughput"
    assert switcher.history == [switch]


def test_adaptive_ignores_a_single_spike():
    switcher = AdaptiveSwitcher(load_settings(), patience=3)
    for s in (sample(rate=200), sample(), sample(rate=200), sample(), sample(rate=200)):
        assert switcher.observe(s) is None
    assert switcher.settings.profile.name == "balanced"


@pytest.mark.parametrize(
    ("s", "profile"),
    [
        (sample(memory=100, rate=500), "resource_constrained"),
        (sample(depth=500), "throughput"),
        (sample(p95=300), "latency"),
        (sample(), "balanced"),
    ],
)
def test_adaptive_wants(s, profile):
    assert AdaptiveSwitcher(load_settings()).want(s)[0] == profile
