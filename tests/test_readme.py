"""The README's code is real: its Python examples run, its SB3 example is the tested one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_sb3_bridge import README_EXAMPLE

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_the_optimizer_example_runs_and_samples_a_posterior(tmp_path: Path):
    [example] = [block for block in PYTHON_BLOCKS if "from vadam_rl.optim import" in block]
    check = (
        "\nassert len(sigma) == 4 and all((s > 0).all() for s in sigma)"
        "\nassert not torch.equal(draws[0], model(x))  # the draw differed from mu"
        "\nprint('ok')\n"
    )
    script = tmp_path / "example.py"
    script.write_text(example + check)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "posterior std per layer" in done.stdout and done.stdout.strip().endswith("ok")


def test_the_sb3_example_is_the_one_test_sb3_bridge_runs():
    assert README_EXAMPLE in PYTHON_BLOCKS


def test_the_two_setup_commands_are_the_makefile_targets_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make train" in README and "make test" in README
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)


def test_the_onnx_example_runs_on_an_exported_policy(tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra")
    from sb3_helpers import make_random_run

    from vadam_rl.onnx_export import export_onnx

    [example] = [block for block in PYTHON_BLOCKS if "onnxruntime.InferenceSession" in block]
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [8])
    export_onnx(run.path, tmp_path / "policy.onnx")
    script = tmp_path / "example.py"
    script.write_text(example + "\nassert action.shape == (1, 1)\nprint('ok')\n")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
