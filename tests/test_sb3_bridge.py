"""The SB3 bridge: exported zips are genuine SB3 DDPG models; SB3 DDPG/TD3 zips load and import."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli
from sb3_helpers import assert_sb3_matches, files_under, make_random_run, run_python
from stable_baselines3 import DDPG, SAC, TD3

from vadam_rl.agent.networks import ActionScaler
from vadam_rl.commands.sb3 import eval_command, export_command
from vadam_rl.config import TrainConfig, save_config
from vadam_rl.errors import UserError
from vadam_rl.run_dir import atomic_torch_save, policy_path
from vadam_rl.sb3.export import (
    POLICY_KEYS,
    export_policy,
    export_sb3,
    import_sb3,
    load_sb3,
    policy_file,
)

# The README's "load it in SB3" example, verbatim (the path is substituted in the test).
README_EXAMPLE = """\
from stable_baselines3 import DDPG
model = DDPG.load("runs/.../model.zip")
action, _ = model.predict(obs, deterministic=True)
"""


def sb3_zip(tmp_path, algo=DDPG, net_arch=(32, 32), env_id="Pendulum-v1", name="sb3.zip"):
    """An ordinary SB3 model, untrained (initial weights are as good as any for a mapping)."""
    model = algo("MlpPolicy", env_id, policy_kwargs={"net_arch": list(net_arch)}, device="cpu")
    model.save(tmp_path / name)
    return model, tmp_path / name


def sb3_box_actions(actor, env_or_model, obs):
    space = env_or_model.action_space
    with torch.no_grad():
        squashed = actor(torch.as_tensor(obs)).numpy()
    return ActionScaler(space.low, space.high).to_env(squashed)


# --------------------------------------------------------------------------------------------
# Export: a genuine SB3 DDPG zip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "hidden_sizes"),
    [("Pendulum-v1", [64, 64]), ("HalfCheetah-v5", [64, 64]), ("HalfCheetah-v5", [400, 300])],
    ids=["pendulum-64x64", "halfcheetah-64x64", "halfcheetah-400x300"],
)
def test_exported_zip_acts_and_scores_like_our_actor_in_a_fresh_sb3_process(
    tmp_path, env_id, hidden_sizes
):
    run = make_random_run(tmp_path / "run", env_id, hidden_sizes)
    zip_path = export_sb3(run.path)
    assert zip_path == run.path / "model.zip"
    assert_sb3_matches(zip_path, run.actor(2000), env_id, seed=3, episodes=2)


def test_export_copies_actor_critic_and_both_targets_exactly(tmp_path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [64, 48], critic_sizes=[32, 32])
    model = DDPG.load(export_sb3(run.path), device="cpu")
    saved = run.policies[2000]
    for name in ("actor", "critic", "actor_target", "critic_target"):
        exported = getattr(model.policy, name).state_dict()
        assert exported.keys() == saved[name].keys()
        for key, tensor in saved[name].items():
            assert torch.equal(exported[key], tensor), f"{name}.{key}"
    assert model.policy_kwargs["net_arch"] == {"pi": [64, 48], "qf": [32, 32]}


def test_exported_zip_has_plain_adam_state_and_no_vadam_rl_pickles(tmp_path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    with zipfile.ZipFile(export_sb3(run.path)) as archive:
        assert {"actor.optimizer.pth", "critic.optimizer.pth", "policy.pth"} <= set(
            archive.namelist()
        )
        data = json.loads(archive.read("data"))
    entries = [v for v in data.values() if isinstance(v, dict) and ":serialized:" in v]
    pickles = [base64.b64decode(entry[":serialized:"]) for entry in entries]
    assert pickles and not any(b"vadam_rl" in p for p in pickles)
    assert data["vadam_rl_metadata"]["env_id"] == "Pendulum-v1"
    assert data["vadam_rl_metadata"]["step"] == 2000


def test_export_picks_last_best_or_a_step_and_names_the_zip_after_it(tmp_path):
    run = make_random_run(
        tmp_path / "run", "Pendulum-v1", [16], steps=(1000, 3000, 2000), best_step=1000
    )
    expected = {"last": (3000, "model.zip"), "best": (1000, "model_best.zip"),
                "2000": (2000, "model_step_2000.zip")}  # fmt: skip
    for checkpoint, (step, name) in expected.items():
        zip_path = export_sb3(run.path, checkpoint=checkpoint)
        assert zip_path.name == name
        actor = DDPG.load(zip_path, device="cpu").policy.actor
        assert torch.equal(actor.mu[0].weight, run.policies[step]["actor"]["mu.0.weight"])


def test_export_last_is_the_newer_of_last_pt_and_the_highest_step_file(tmp_path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16], steps=(1000, 2000, 3000))
    last = tmp_path / "run" / "policies" / "last.pt"
    atomic_torch_save(run.policies[3000], last)  # the end of the run: step_3000.pt wins the tie
    assert export_sb3(run.path) and policy_file(run.path, "last").name == "step_3000.pt"
    atomic_torch_save({**run.policies[2000], "step": 3500}, last)  # evaluated after the snapshot
    actor = DDPG.load(export_sb3(run.path), device="cpu").policy.actor
    assert torch.equal(actor.mu[0].weight, run.policies[2000]["actor"]["mu.0.weight"])


def test_export_of_a_paper_layout_critic_keeps_sb3_critic_and_warns(tmp_path, caplog):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [32, 32], action_layer=1)
    with caplog.at_level(logging.WARNING, logger="vadam_rl.sb3.export"):
        zip_path = export_sb3(run.path)
    assert "freshly initialised critic" in caplog.text
    model = DDPG.load(zip_path, device="cpu")
    assert model.vadam_rl_metadata["critic_copied"] is False
    obs = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, sb3_box_actions(run.actor(2000), model, obs), atol=1e-6)


def test_export_leaves_the_callers_torch_rng_untouched(tmp_path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    export_sb3(run.path)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    ("checkpoint", "steps", "message"),
    [
        ("best", (1000,), "no 'best' policy"),
        ("5000", (1000,), "available: 1000"),
        ("last", (), "available: none yet"),
        ("latest", (1000,), "best, last or a step number"),
    ],
)
def test_export_of_a_missing_checkpoint_is_a_user_error_and_writes_nothing(
    tmp_path, checkpoint, steps, message
):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16], steps=steps)
    before = files_under(tmp_path)
    with pytest.raises(UserError, match=message):
        export_sb3(run.path, checkpoint=checkpoint)
    assert files_under(tmp_path) == before


def test_export_of_weights_that_do_not_fit_the_config_is_a_user_error_and_writes_nothing(
    tmp_path,
):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [32, 32])
    config = TrainConfig(env_id="Pendulum-v1")
    config.actor.hidden_sizes = config.critic.hidden_sizes = [64, 64]
    save_config(config, run.path / "config.yaml")
    (run.path / "model.zip").write_bytes(b"previous export")
    before = files_under(tmp_path)
    with pytest.raises(UserError, match=r"actor\.mu\.0\.weight has shape \(32, 3\)"):
        export_sb3(run.path)
    assert files_under(tmp_path) == before
    assert (run.path / "model.zip").read_bytes() == b"previous export"


def test_export_of_an_unreadable_policy_file_or_a_non_run_dir_is_a_user_error(tmp_path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16], steps=(1000,))
    policy_path(run.path, 1000).write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read policy file"):
        export_sb3(run.path)
    atomic_torch_save({"actor": {}, "step": 1000}, policy_path(run.path, 1000))
    with pytest.raises(UserError, match="missing critic"):
        export_sb3(run.path)
    with pytest.raises(UserError, match="not a run directory"):
        export_sb3(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"\.zip"):
        export_sb3(run.path, output=tmp_path / "model.pt")


def test_readme_example_runs_in_a_fresh_process(tmp_path):
    run = make_random_run(tmp_path / "runs" / "pendulum", "Pendulum-v1", [64, 64])
    zip_path = export_sb3(run.path)
    example = README_EXAMPLE.replace("runs/.../model.zip", str(zip_path))
    script = (
        "import gymnasium as gym, json\n"
        "obs, _ = gym.make('Pendulum-v1').reset(seed=0)\n"
        f"{example}"
        "print(json.dumps({'obs': obs.tolist(), 'action': action.tolist()}))\n"
    )
    out = json.loads(run_python(script, cwd=tmp_path).stdout.strip().splitlines()[-1])
    ours = sb3_box_actions(run.actor(2000), DDPG.load(zip_path), np.array([out["obs"]], np.float32))
    np.testing.assert_allclose(out["action"], ours[0], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Load and import SB3 zips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights_only", [False, True])
@pytest.mark.parametrize("algo", [DDPG, TD3])
def test_load_sb3_reads_ordinary_ddpg_and_td3_zips_with_identical_actions(
    tmp_path, algo, weights_only
):
    model, path = sb3_zip(tmp_path, algo)
    loaded = load_sb3(path, weights_only=weights_only)
    assert loaded.algorithm == algo.__name__
    assert loaded.env_id is None  # SB3 does not record it
    assert (loaded.action_space is None) == weights_only
    obs = np.random.default_rng(1).normal(size=(1000, 3)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(sb3_box_actions(loaded, model, obs), expected, rtol=0, atol=1e-6)


def test_weights_only_load_unpickles_nothing(tmp_path, monkeypatch):
    _, path = sb3_zip(tmp_path, TD3)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled something")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    load_sb3(path, weights_only=True)
    import_sb3(path, weights_only=True)
    with pytest.raises(UserError, match="cannot unpickle"):  # the patch does bite
        load_sb3(path, weights_only=False)


def test_load_sb3_knows_the_env_of_zips_we_exported(tmp_path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16])
    loaded = load_sb3(export_sb3(run.path), weights_only=True)
    assert loaded.env_id == "Pendulum-v1"
    assert loaded.metadata["exported_by"]["step"] == 2000


@pytest.mark.parametrize("weights_only", [False, True])
def test_load_sb3_refuses_activations_our_mlps_do_not_have(tmp_path, weights_only):
    kwargs = {"net_arch": [8], "activation_fn": torch.nn.Tanh}
    TD3("MlpPolicy", "Pendulum-v1", policy_kwargs=kwargs, device="cpu").save(tmp_path / "tanh.zip")
    with pytest.raises(UserError, match=r"Tanh.*ReLU"):
        load_sb3(tmp_path / "tanh.zip", weights_only=weights_only)


def write_bad_files(tmp_path):
    _, good = sb3_zip(tmp_path)
    names = ("junk", "truncated", "tail-cut", "flipped", "no-policy", "missing")
    files = {name: tmp_path / f"{name}.zip" for name in names}
    files["junk"].write_bytes(b"this is not a zip file")
    data = good.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["tail-cut"].write_bytes(data[:-30])
    middle = len(data) // 2  # inside policy.pth: its CRC no longer matches
    flipped = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    files["flipped"].write_bytes(data[:middle] + flipped + data[middle + 64 :])
    with zipfile.ZipFile(files["no-policy"], "w") as archive:
        archive.writestr("data", "{}")
    files["huge"] = tmp_path / "huge.zip"  # 80 MiB of data that compress to ~80 KB
    with zipfile.ZipFile(files["huge"], "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("policy.pth", b"")
        with archive.open("data", "w") as member:
            for _ in range(80):
                member.write(b" " * (1 << 20))
    files["sac"] = tmp_path / "sac.zip"
    SAC("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]}, device="cpu").save(
        files["sac"]
    )
    return files


@pytest.mark.parametrize("weights_only", [False, True])
def test_corrupt_missing_or_foreign_files_are_one_line_user_errors(tmp_path, weights_only):
    not_sb3 = "cannot read .* as a Stable-Baselines3 model|is not a Stable-Baselines3 model"
    expected = {
        **dict.fromkeys(("junk", "truncated", "tail-cut", "flipped", "no-policy"), not_sb3),
        "missing": "no such model file",
        "sac": "holds a SAC policy, not a DDPG/TD3 policy",
        "huge": "its data is 80 MiB, more than a DDPG/TD3 model's can be",
    }
    for name, path in write_bad_files(tmp_path).items():
        for read in (load_sb3, import_sb3):
            with pytest.raises(UserError, match=expected[name]) as err:
                read(path, weights_only=weights_only)
            assert "\n" not in str(err.value), name


@pytest.mark.parametrize("algo", [DDPG, TD3])
def test_round_trip_sb3_import_export_sb3_gives_the_same_actions(tmp_path, algo):
    original, path = sb3_zip(tmp_path, algo, net_arch=(48, 32))
    imported = import_sb3(path)
    assert imported.actor_config.hidden_sizes == [48, 32]
    assert imported.critic_config.action_layer == 0
    assert bool(imported.notes) == (algo is TD3)  # TD3's second critic is dropped, and said so

    run_dir = tmp_path / "run"
    config = imported.apply_to(TrainConfig(env_id="Pendulum-v1"))
    run_dir.mkdir()
    save_config(config, run_dir / "config.yaml")
    atomic_torch_save(imported.policy_file(step=0), policy_path(run_dir, 0))
    exported = DDPG.load(export_sb3(run_dir), device="cpu")

    obs = np.random.default_rng(2).normal(size=(1000, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        exported.predict(obs, deterministic=True)[0], original.predict(obs, deterministic=True)[0]
    )
    source = original.policy.state_dict()
    for key, tensor in exported.policy.state_dict().items():
        assert torch.equal(tensor, source[key]), key  # qf0 of TD3 is the critic


# --------------------------------------------------------------------------------------------
# Commands and the rl-zoo layout
# --------------------------------------------------------------------------------------------


def test_export_command_prints_the_path_and_lays_out_a_zoo_experiment(tmp_path, capsys):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    logs = tmp_path / "logs"
    before = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    export_command(run.path, zoo_layout=logs)
    export_command(run.path, zoo_layout=logs)
    out = capsys.readouterr().out
    assert "--exp-id 2" in out
    # The layout is all it writes: the run directory is left as it was.
    assert sorted(p.relative_to(run.path) for p in run.path.rglob("*")) == before
    exp = logs / "ddpg" / "Pendulum-v1_2"
    hyperparams = yaml.unsafe_load((exp / "Pendulum-v1" / "config.yml").read_text())
    assert hyperparams["normalize"] is False and hyperparams["policy"] == "MlpPolicy"
    assert yaml.safe_load((exp / "Pendulum-v1" / "args.yml").read_text())["env"] == "Pendulum-v1"
    model = DDPG.load(exp / "Pendulum-v1.zip", device="cpu", buffer_size=1)  # as enjoy.py loads
    assert torch.equal(model.policy.actor.mu[0].weight, run.policies[2000]["actor"]["mu.0.weight"])


def test_eval_command_on_a_run_dir_prints_mean_and_std_of_the_policy_asked_for(tmp_path, capsys):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16], best_step=1000)
    eval_command(run.path, episodes=2, seed=1, device="cpu", checkpoint="best")
    out = capsys.readouterr().out
    assert "best.pt on Pendulum-v1: return" in out and "±" in out and "over 2 episodes" in out


def test_eval_command_on_a_zip_needs_env_unless_the_zip_knows_it(tmp_path, capsys):
    _, path = sb3_zip(tmp_path, TD3)
    with pytest.raises(UserError, match="pass --env"):
        eval_command(path, episodes=1)
    eval_command(path, env="Pendulum-v1", episodes=1, weights_only=True, device="cpu")
    with pytest.raises(UserError, match=r"expects observations \(3,\)"):
        eval_command(path, env="HalfCheetah-v5", episodes=1)
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16])
    eval_command(export_sb3(run.path), episodes=1)
    out = capsys.readouterr().out
    assert "(TD3) on Pendulum-v1" in out and "(DDPG) on Pendulum-v1" in out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"episodes": 0}, "--episodes"),
        ({"device": "tpu"}, "unknown device"),
        ({"video": Path("episode.avi")}, r"\.mp4"),
        ({"target": Path("no/such/run")}, "no such run directory or model file"),
    ],
)
def test_eval_command_rejects_bad_input(tmp_path, kwargs, message):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16])
    with pytest.raises(UserError, match=message):
        eval_command(**{"target": run.path, **kwargs})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_and_eval_of_a_run_trained_on_cuda(tmp_path, capsys):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    on_gpu = {
        k: {n: t.cuda() for n, t in v.items()} for k, v in run.policies[2000].items() if k != "step"
    }
    zip_path = export_policy(*(on_gpu[k] for k in POLICY_KEYS), run.config, tmp_path / "gpu.zip")
    actor = DDPG.load(zip_path, device="cpu").policy.actor
    assert torch.equal(actor.mu[0].weight, run.policies[2000]["actor"]["mu.0.weight"])
    eval_command(zip_path, episodes=1, device="cuda")
    assert "(DDPG) on Pendulum-v1" in capsys.readouterr().out


def _with_env_id(zip_path: Path, env_id: object, out: Path) -> Path:
    """A copy of an SB3 zip whose vadam-rl metadata names ``env_id``."""
    import json
    import zipfile

    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            payload = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(payload)
                data["vadam_rl_metadata"]["env_id"] = env_id
                payload = json.dumps(data).encode()
            dst.writestr(item, payload)
    return out


@pytest.mark.parametrize("command", ["eval", "import-sb3"])
def test_weights_only_never_imports_the_module_a_zip_names(tmp_path: Path, command: str):
    """``module:Env`` ids make gymnasium import ``module``: under --weights-only the zip's id
    is refused (one line, exit 2) and the module never runs; --env is the user's choice."""
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    evil = _with_env_id(export_sb3(run.path), "planted:Pendulum-v1", tmp_path / "evil.zip")
    args = ["eval", str(evil), "--episodes", "1"] if command == "eval" else [
        "import-sb3", str(evil), "--log-dir", str(tmp_path / "runs"), "--total-steps", "10"
    ]  # fmt: skip
    result = run_cli(*args, "--weights-only", cwd=tmp_path)
    assert result.returncode == 2
    assert "would import the module 'planted'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_a_zip_whose_env_id_is_not_a_string_is_read_as_recording_none(tmp_path: Path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    odd = _with_env_id(export_sb3(run.path), 17, tmp_path / "odd.zip")
    assert load_sb3(odd, weights_only=True).env_id is None
    result = run_cli("eval", str(odd), "--weights-only", "--episodes", "1")
    assert result.returncode == 2 and "does not record its environment" in result.stderr


def test_unpickling_a_zip_says_so_once(tmp_path: Path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    result = run_cli("eval", str(export_sb3(run.path)), "--episodes", "1", check=True)
    assert result.stderr.count("unpickles the Python objects it holds") == 1
    quiet = run_cli("eval", str(export_sb3(run.path)), "--episodes", "1", "--weights-only")
    assert "unpickles" not in quiet.stderr


def test_rl_zoo_enjoy_plays_an_exported_policy_as_our_eval_does(tmp_path: Path):
    """rl-baselines3-zoo's own player on our --zoo-layout: the same episode return as
    ``evaluate`` (seed 0, one episode), to the two decimals the zoo prints."""
    pytest.importorskip("rl_zoo3", reason="needs the zoo extra")
    import re
    import subprocess
    import sys

    from vadam_rl.envs import make_env
    from vadam_rl.evaluation import evaluate

    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16])
    export_command(run.path, zoo_layout=tmp_path / "logs")
    enjoy = subprocess.run(
        [sys.executable, "-m", "rl_zoo3.enjoy", "--algo", "ddpg", "--env", "Pendulum-v1",
         "-f", str(tmp_path / "logs"), "--exp-id", "1", "--no-render", "-n", "200"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert enjoy.returncode == 0, enjoy.stderr[-2000:]
    zoo_return = float(re.search(r"Mean reward: (-?[\d.]+)", enjoy.stdout).group(1))
    env = make_env("Pendulum-v1")
    ours = evaluate(run.actor(2000), env, 1, 0, torch.device("cpu")).mean_return
    env.close()
    assert abs(zoo_return - ours) <= 0.005 + 1e-9
