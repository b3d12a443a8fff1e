"""Every ``python <entry>.py key=value ...`` command the README, the docs, the configs and the entry scripts show
must compose with the real configs: a renamed key or group breaks this test, not a user's first try."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = {p.stem for p in ROOT.glob("*.py") if (ROOT / "conf" / f"{p.stem}.yaml").is_file()}
COMMAND = re.compile(r"python3? (\w+)\.py\b((?:\\\n|[^\n`|#;)])*)")
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "conf").rglob("*.yaml")),
    *sorted(ROOT.glob("*.py")),
    *sorted((ROOT / "notebooks").glob("*.ipynb")),
]


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, entry, overrides) for every documented command line of an entry point with a Hydra config."""
    found = []
    for source in SOURCES:
        text = source.read_text()
        for match in COMMAND.finditer(text):
            entry, args = match.group(1), match.group(2).replace("\\\n", " ")
            if entry not in ENTRIES:
                continue
            args = re.sub(r"<[^>]*>", "X", args)  # <run>, <time>: placeholders for a path
            tokens = [t for t in shlex.split(args, posix=True) if t not in ("...", "-m", "--multirun")]
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{source.relative_to(ROOT)}:{line}", entry, tokens))
    return found


def first_sweep_value(override: str) -> str:
    """``key=a,b`` (a multirun sweep) -> ``key=a``: compose one job of the sweep."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    if parsed.is_sweep_override():
        return f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}"
    return override


COMMANDS = documented_commands()


def test_the_docs_show_commands_for_every_entry_point():
    assert {entry for _, entry, _ in COMMANDS} >= {"train", "predict", "evaluate", "leaderboard", "export"}


@pytest.mark.parametrize("where,entry,overrides", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command_composes(where: str, entry: str, overrides: list[str]):
    if any(o.startswith("hydra/launcher=slurm") for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra is not installed")
    if any(o.startswith("hparams_search=optuna") for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")
    overrides = [first_sweep_value(o) for o in overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            compose(entry, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
