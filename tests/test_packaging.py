"""The distribution ships every part of the library (pyproject lists packages explicitly)."""

import subprocess
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_distribution():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "vadam_rl").rglob("__init__.py")
    }
    assert found <= listed, f"missing from pyproject's packages: {sorted(found - listed)}"


def make_dry_run(*variables: str) -> str:
    """The commands ``make install`` would run into a fresh venv, without running them."""
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "install", "VENV=/nonexistent/venv", *variables],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_torch_index_installs_torch_from_that_index_only():
    cpu = "https://download.pytorch.org/whl/cpu"
    [torch_line] = [
        line for line in make_dry_run(f"TORCH_INDEX={cpu}").splitlines() if "torch==" in line
    ]
    assert f'--index-url "{cpu}" "torch==2.13.0"' in torch_line


def test_without_torch_index_torch_comes_from_the_default_index():
    [torch_line] = [line for line in make_dry_run().splitlines() if "torch==" in line]
    assert "--index-url" not in torch_line


def test_make_train_tells_vadam_rl_the_make_command_that_continues_the_run():
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "train", "AGENT=ddpg-adam-plain", "STEPS=500"],
        capture_output=True,
        text=True,
        check=True,
    )
    train_lines = [line for line in done.stdout.splitlines() if "vadam-rl train" in line]
    assert train_lines
    for line in train_lines:  # (a new run and a resumed one alike)
        assert "VADAM_RL_CONTINUE='make train AGENT=ddpg-adam-plain STEPS=500'" in line
