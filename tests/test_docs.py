"""The documented configuration cannot drift from the config class."""

from __future__ import annotations

import tomllib
from pathlib import Path

from botd.config import Config, load_config, render_markdown_table, render_toml

ROOT = Path(__file__).resolve().parent.parent


def test_config_toml_is_generated_from_the_class() -> None:
    assert (ROOT / "config.toml").read_text(encoding="utf-8") == render_toml()


def test_config_toml_loads_to_the_defaults() -> None:
    assert load_config(ROOT / "config.toml", env={}) == Config()
    assert set(tomllib.loads(render_toml())) == set(Config.__dataclass_fields__)


def test_readme_table_is_generated_from_the_class() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- config-table:start -->\n") + len("<!-- config-table:start -->\n")
    end = readme.index("<!-- config-table:end -->")
    assert readme[start:end] == render_markdown_table()


def test_readme_names_exactly_two_setup_commands_and_ci_uses_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "scripts/run " in readme and "scripts/test " in readme
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
