"""The command scripts as a user runs them: a missing mandatory setting is one line and exit code 2, the closing
summary is printed once, export writes next to the run by default, and the leaderboard ranks without Inception."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MANDATORY = {
    "predict": ["ckpt_path", "input", "output_dir"],
    "evaluate": ["ckpt_path"],
    "leaderboard": ["runs"],
    "export": ["ckpt_path"],
    "plot": ["run"],
}


def command(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python <name>.py *args`` from the project root; stdout and stderr together, as a console shows them."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "CYCLEGAN_OFFLINE": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", sorted(MANDATORY))
def test_missing_mandatory_settings_are_one_line_and_exit_code_2(name):
    result = command(name)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stdout and len(lines) == 1, result.stdout
    assert all(f"{key}=" in lines[0] for key in MANDATORY[name]) and f"conf/{name}.yaml" in lines[0]


@pytest.fixture
def run_copy(tiny_runs, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[1][0], run)
    return run


def test_predict_and_export_print_their_summary_once(run_copy, tiny_runs, tmp_path):
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    out = command(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={tiny_runs[0] / 'testA'}",
        f"output_dir={tmp_path / 'out'}",
        "progress=false",
    ).stdout
    assert len(re.findall(r"^3 images translated, 0 already done", out, re.M)) == 1, out

    out = command("export", f"ckpt_path={ckpt}").stdout  # no output=: next to the run
    exported = run_copy / "export" / "last" / "gen_a2b.pt"
    assert exported.is_file(), out
    assert len(re.findall(r"^exported .*gen_a2b\.pt \(torchscript\); max \|exported - eager\|", out, re.M)) == 1, out


def test_leaderboard_ranks_two_runs_without_inception_weights(tiny_runs, tmp_path):
    sweep = tiny_runs[1][0].parent
    env = {"TORCH_HOME": str(tmp_path / "empty_torch_home")}
    result = command("leaderboard", f"runs=[{sweep}]", f"output_dir={tmp_path}", "max_images=2", env=env)
    out = result.stdout
    assert result.returncode == 0, out
    assert out.count("FID/KID columns are missing") == 1 and "weights-inception-2015-12-05-6726825d.pth" in out
    assert "Ranked by val/swd@best" in out and re.search(r"^\| 1 \|.*\n\| 2 \|", out, re.M), out
    assert "fid" not in (tmp_path / "leaderboard.csv").read_text().splitlines()[0]

    insist = command("leaderboard", f"runs=[{sweep}]", f"output_dir={tmp_path}", "fid.enabled=true", env=env)
    assert insist.returncode == 2 and "Traceback" not in insist.stdout and "CYCLEGAN_OFFLINE=1" in insist.stdout


def test_reports_of_a_checkpoint_go_beside_its_run_and_a_pretrained_name_makes_a_plain_folder(tmp_path):
    from cyclegan_lightning.cli import output_dir_for

    assert output_dir_for(tmp_path / "run" / "checkpoints" / "last.ckpt", "eval") == tmp_path / "run" / "eval" / "last"
    assert output_dir_for("latest_net_G_A.pth", "export") == Path("export") / "latest_net_G_A"
    assert output_dir_for("pretrained:horse2zebra", "export") == Path("export") / "pretrained-horse2zebra"
