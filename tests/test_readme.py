"""The README's code is real (and the optimizer example in docs/optimizers.md): its Python
examples run, its SB3 example is the tested one, its tour works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_sb3_bridge import README_EXAMPLE

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
OPTIMIZERS_DOC = (ROOT / "docs" / "optimizers.md").read_text()


def test_the_optimizer_example_runs_and_samples_a_posterior(tmp_path: Path):
    blocks = re.findall(r"```python\n(.*?)```", OPTIMIZERS_DOC, flags=re.DOTALL)
    [example] = [block for block in blocks if "from vadam_rl.optim import" in block]
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


TOUR = README.split("## A 5-minute tour")[1].split("\n## ")[0]
# What makes each tour command tiny; the commands themselves are the README's, in order.
TINY_TRAINING = (
    "--total-steps 300 --no-progress --set learning_starts=100 --set eval_every=150 "
    "--set eval_episodes=1 --set checkpoint_every=150 --set buffer_size=1000 "
    "--set actor.hidden_sizes=[16] --set critic.hidden_sizes=[16,16]"
)


def tour_script() -> str:
    """The tour's shell commands as one script, each made tiny (few steps, small networks)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", TOUR, flags=re.DOTALL):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if not command:
                continue
            if "--backend ray" in command:
                continue  # (it needs a Ray cluster at the address it names)
            command = command.replace("runs/RUN", "runs/ddpg-vadam_HalfCheetah-v5_s0")
            command = command.replace("sb3_model.zip", "hc.zip")  # (an SB3 zip made above)
            command = re.sub(r"--total-steps \d+ ?", "", command)
            command = re.sub(r"--video-steps \d+", "--video-steps 20", command)
            if command.startswith("vadam-rl train --resume"):
                command += " --total-steps 450 --no-progress"
            elif command.startswith(("vadam-rl train", "vadam-rl import-sb3")):
                command += " " + TINY_TRAINING
            elif command.startswith("vadam-rl compare"):
                tiny = TINY_TRAINING.replace("--total-steps 300 --no-progress ", "")
                # (one default preset beside those the command adds: the others train
                # through the same code, and each run is a process of its own)
                command += " --presets ddpg-adam-plain --num-seeds 1 --total-steps 300 " + tiny
            commands.append(command)
    commands += re.findall(r"`(vadam-rl report [^`]+)`", TOUR)  # (told in the text)
    return "set -euo pipefail\n" + "\n".join(f"echo '$ {c}'\n{c}" for c in commands) + "\n"


@pytest.mark.expensive
def test_the_tour_pasted_in_order_into_a_fresh_shell_works(tmp_path: Path):
    script = tour_script()
    assert script.count("vadam-rl ") >= 14, script  # (the tour's commands were all found)
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "MUJOCO_GL": "egl"}
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    for made in ("hc.zip", "policy.onnx", "cheetah.mp4", "runs/compare/report/results.md"):
        assert (tmp_path / made).is_file(), made
