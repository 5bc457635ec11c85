"""The one lazy registry (bench.registry): every "module:attr" table of bench is one, a miss
names the closest known name, nothing is imported before it is asked for, and the CLI's
choices are the registries' names."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from bench.catalog.engines import ENGINE_CLASSES, ENGINES
from bench.cli import COMMANDS, cli
from bench.errors import ConfigError
from bench.fleet.backends import BACKENDS, get_backend
from bench.registry import Registry
from bench.telemetry import METERS, meter_choices, open_telemetry

REGISTRIES = [ENGINE_CLASSES, METERS, BACKENDS, COMMANDS]


def test_a_miss_names_the_closest_name_then_every_known_one():
    reg = Registry("thing", {"alpha": "json:dumps", "beta": "json:loads"})
    with pytest.raises(ConfigError) as e:
        reg.get("alpah")
    assert str(e.value) == "unknown thing 'alpah'; did you mean 'alpha'? (known: alpha, beta)"
    with pytest.raises(ConfigError) as e:
        reg.get("zzz")
    assert str(e.value) == "unknown thing 'zzz' (known: alpha, beta)"


def test_get_resolves_the_target_and_keeps_the_order():
    import json

    reg = Registry("thing", {"b": "json:loads", "a": "json:dumps"})
    assert reg.get("a") is json.dumps and list(reg) == ["b", "a"] == reg.names() and len(reg) == 2
    assert "a" in reg and "c" not in reg


def test_a_target_that_is_not_module_attr_is_refused_when_the_table_is_made():
    with pytest.raises(ValueError, match="'json.dumps' is not 'module:attr'"):
        Registry("thing", {"a": "json.dumps"})


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_every_entry_of_every_registry_resolves(registry):
    for name in registry:
        assert registry.get(name) is not None, name


def test_the_tables_are_registries_and_engines_match_the_catalog():
    assert all(isinstance(r, Registry) for r in REGISTRIES)
    assert ENGINE_CLASSES.names() == list(ENGINES)


def test_each_domain_refuses_a_typo_with_the_close_name():
    with pytest.raises(ConfigError, match=r"unknown fleet backend 'rey'; did you mean 'ray'\?"):
        get_backend("rey")
    with pytest.raises(ConfigError, match=r"unknown energy meter 'nvm'; did you mean 'nvml'\? \(known: auto, none, nvml"):
        open_telemetry("nvm")
    from bench.engines import engine_class

    with pytest.raises(ConfigError, match=r"unknown engine 'vlm'; did you mean 'vllm'\?"):
        engine_class("vlm")


@pytest.mark.slow
def test_nothing_a_registry_names_is_imported_before_it_is_asked_for():
    code = ("import sys; import bench.cli, bench.telemetry, bench.fleet.backends, bench.engines; "
            "from bench.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print('LOADED', sorted(m for m in ('bench.telemetry.nvml', 'bench.telemetry.rapl', "
            "'bench.fleet.backends.ray', 'bench.fleet.backends.skypilot', 'bench.engines.vllm_server', "
            "'bench.engines.hf_engine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.splitlines()[-1] == "LOADED []"


def _choices(command, option: str) -> list[str]:
    return next(p.type.choices for p in command.params if option in p.opts)


def test_the_cli_choices_are_the_registries_names():
    assert list(_choices(COMMANDS.get("run"), "--telemetry")) == meter_choices() == ["auto", *METERS, "none"]
    assert list(_choices(COMMANDS.get("run"), "--engine")) == list(ENGINES)
    node_serve = COMMANDS.get("node").commands["serve"]
    assert list(_choices(node_serve, "--telemetry")) == meter_choices()
    fleet = COMMANDS.get("fleet")
    for sub in fleet.commands.values():
        if any("--backend" in p.opts for p in sub.params):
            assert list(_choices(sub, "--backend")) == BACKENDS.names(), sub.name


def test_an_unknown_choice_is_refused_by_the_cli_naming_the_registry():
    result = CliRunner().invoke(cli, ["run", "--telemetry", "joulemeter"])
    assert result.exit_code == 2
    for name in meter_choices():
        assert f"'{name}'" in result.output
