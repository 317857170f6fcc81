"""The vadam-rl command line, run as a user runs it: in a subprocess, on real envs and files."""

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, pendulum_args, popen_cli, run_cli, wait_for
from sb3_helpers import assert_sb3_matches
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vadam_rl.agent.networks import Actor

SB3_TAGS = {
    "rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/actor_loss",
    "train/critic_loss", "train/learning_rate", "eval/mean_reward", "eval/mean_ep_length",
}  # fmt: skip


@pytest.mark.expensive
def test_halfcheetah_run_writes_tensorboard_config_and_checkpoint(tmp_path: Path):
    run_cli(
        "train", "--agent", "ddpg-vadam", "--env", "HalfCheetah-v5", "--total-steps", "3000",
        "--log-dir", str(tmp_path), "--run-name", "cheetah", "--no-progress", *TINY,
        "--set", "learning_starts=1000", "--set", "eval_every=1500", "--set", "log_every=500",
        "--set", "checkpoint_every=1000", check=True,
    )  # fmt: skip
    run = tmp_path / "cheetah"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["agent"] == "ddpg-vadam" and config["env_id"] == "HalfCheetah-v5"
    assert config["actor"]["optimizer"]["name"] == "vadam"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)  # no pickled code
    assert checkpoint["progress"]["step"] == 3000
    events = EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert tags >= SB3_TAGS
    assert {"explore/action_distance", "posterior/sigma_mean/0.weight"} <= tags
    assert "posterior/sigma/0.weight" in events.Tags()["histograms"]
    assert [e.step for e in events.Scalars("eval/mean_reward")] == [1500, 3000]  # env steps
    assert [e.value for e in events.Scalars("rollout/ep_len_mean")][-1] == 1000
    sigmas = [e.value for e in events.Scalars("posterior/sigma_mean/0.weight")]
    assert all(0 < s <= 0.01 for s in sigmas)  # the precision floor caps sigma at 1/sqrt(1e4)
    assert json.loads((run / "summary.json").read_text())["finished"] is True


@pytest.mark.expensive
def test_a_trained_runs_zips_load_in_sb3_and_act_like_its_policies(tmp_path: Path):
    run_cli(
        "train", "--agent", "ddpg-vadam", "--env", "HalfCheetah-v5", "--total-steps", "2000",
        "--log-dir", str(tmp_path), "--run-name", "cheetah", "--no-progress", *TINY,
        "--set", "learning_starts=500", "--set", "eval_every=1000", check=True,
    )  # fmt: skip
    run = tmp_path / "cheetah"
    exported = tmp_path / "best.zip"
    run_cli("export", str(run), "-o", str(exported), "--checkpoint", "best", check=True)
    for zip_path, policy in [(run / "model.zip", "step_2000.pt"), (exported, "best.pt")]:
        actor = Actor(17, 6, [32, 32])  # HalfCheetah's observation and action sizes; TINY
        actor.load_state_dict(torch.load(run / "policies" / policy, weights_only=True)["actor"])
        assert_sb3_matches(zip_path, actor, "HalfCheetah-v5", episodes=1)


def test_import_sb3_starts_a_run_from_the_zips_policy(tmp_path: Path):
    from stable_baselines3 import DDPG

    original = DDPG("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [32, 32]})
    original.save(tmp_path / "sb3.zip")
    run_cli(
        "import-sb3", str(tmp_path / "sb3.zip"), "--agent", "ddpg-vadam", "--env", "Pendulum-v1",
        "--total-steps", "400",
        "--log-dir", str(tmp_path), "--run-name", "imported", "--no-progress",
        "--set", "learning_starts=1000", "--set", "eval_episodes=1", check=True,
    )  # fmt: skip
    run = tmp_path / "imported"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["env_id"] == "Pendulum-v1" and config["actor"]["hidden_sizes"] == [32, 32]
    assert config["tau"] == 0.005  # the preset's Pendulum-v1 overrides apply
    exported = DDPG.load(run / "model.zip", device="cpu")  # no update ran: the same policy
    obs = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)).numpy()
    assert (
        abs(exported.predict(obs, deterministic=True)[0] - original.predict(obs, True)[0]).max()
        <= 1e-6
    )


def final_weights(run: Path, step: int) -> dict:
    return torch.load(run / "policies" / f"step_{step}.pt", weights_only=True)


@pytest.mark.expensive
def test_killed_run_resumes_exactly_like_an_uninterrupted_one(tmp_path: Path):
    run_cli(*pendulum_args(tmp_path, "whole", steps=3000), check=True)
    log = tmp_path / "killed.log"
    process = popen_cli(*pendulum_args(tmp_path, "killed", steps=3000), log=log)
    wait_for(log, "step     2,500")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    # What a kill during a write leaves (the kill above rarely lands in one): temp files.
    killed_dir = tmp_path / "killed"
    left = [killed_dir / ".checkpoint.pt.x1.tmp", killed_dir / "policies" / ".step_3000.pt.x2.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    run_cli("train", "--resume", str(tmp_path / "killed"), "--no-progress", check=True)
    assert not any(path.exists() for path in left)

    def returns(name: str) -> list[str]:
        lines = (tmp_path / name / "evaluations.csv").read_text().splitlines()
        return [line.split(",")[:3] for line in lines]  # step, mean and std of returns

    assert returns("killed") == returns("whole")
    whole, killed = (
        final_weights(tmp_path / "whole", 3000),
        final_weights(tmp_path / "killed", 3000),
    )
    for key in ("actor", "critic"):
        assert all(torch.equal(whole[key][n], killed[key][n]) for n in whole[key])


@pytest.mark.expensive
def test_a_run_being_trained_is_not_resumed_by_a_second_process(tmp_path: Path):
    log = tmp_path / "busy.log"
    process = popen_cli(*pendulum_args(tmp_path, "busy", steps=1_000_000), log=log)
    try:
        wait_for(log, "step     1,500")  # past its first checkpoint
        saved = (tmp_path / "busy" / "config.yaml").read_text()
        second = run_cli("train", "--resume", str(tmp_path / "busy"), "--total-steps", "2000")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"being trained by another process (pid {process.pid})" in second.stderr
        assert process.poll() is None  # the first trains on, its files untouched
        assert (tmp_path / "busy" / "config.yaml").read_text() == saved
    finally:
        process.kill()
        process.wait()


@pytest.mark.expensive
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path: Path):
    log = tmp_path / "run.log"
    process = popen_cli(*pendulum_args(tmp_path, "stopped", steps=100_000), log=log)
    wait_for(log, "step     1,000")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    output = log.read_text()
    assert "checkpoint written" in output and "--resume" in output and "Traceback" not in output
    step = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["progress"]["step"]
    assert step >= 1000


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    result = run_cli(
        *pendulum_args(tmp_path, "diverged", steps=5000), "--set", "learning_starts=1000",
        "--set", "checkpoint_every=200", "--set", "log_every=100", "--set", "critic.lr=1e30",
    )  # fmt: skip
    assert result.returncode == 1
    assert "non-finite" in result.stderr and "critic_loss" in result.stderr
    assert "Traceback" not in result.stderr
    checkpoint = torch.load(tmp_path / "diverged" / "checkpoint.pt", weights_only=True)
    assert checkpoint["progress"]["step"] <= 1200
    assert all(torch.isfinite(w).all() for w in checkpoint["agent"]["critic"].values())
    assert not (tmp_path / "diverged" / "summary.json").exists()


def test_an_unexpected_error_is_one_line_with_the_traceback_in_error_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A custom env (module:EnvId, as gym.make accepts it) whose simulator fails after 2500
    # env steps (about step 1700 of training): a real error no check of ours anticipates,
    # after the checkpoint at 1000.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    args = pendulum_args(tmp_path, "crashed", steps=3000)
    args[args.index("Pendulum-v1")] = "crashing_env:CrashingPendulum-v0"
    result = run_cli(*args)
    assert result.returncode == 1
    assert "unexpected RuntimeError" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" in (tmp_path / "crashed" / "error.log").read_text()
    assert (tmp_path / "crashed" / "checkpoint.pt").is_file()


BAD_INPUT = {
    "unknown env": (["--env", "HalfCheetah-v9"], "unknown environment id"),
    "env module missing": (["--env", "no_such_module:Foo-v0"], "cannot import 'no_such_module'"),
    "discrete actions": (["--env", "CartPole-v1"], "Box action space"),
    "unknown preset": (["--agent", "ddpg-nope"], "unknown agent preset"),
    "empty preset": (["--agent", ""], "unknown agent preset ''"),
    "unknown key": (["--set", "actor.nonsense=1"], "unknown config key"),
    "wrong type": (["--set", "actor.lr=abc"], "expected a number"),
    "N out of range": (["--set", "actor.optimizer.train_set_size=0"], "train_set_size"),
    "beta out of range": (["--set", "actor.optimizer.betas=[0.9,1.0]"], "betas[1]"),
    "critic layout": (["--set", "critic.action_layer=2"], "critic.action_layer"),
    "no threads": (["--threads", "0"], "--threads must be >= 1"),
    "infinite lr": (["--set", "actor.lr=inf"], "actor.optimizer.lr must be finite and > 0"),
    "nan lr": (["--set", "critic.lr=.nan"], "critic.optimizer.lr must be finite and > 0"),
    "negative noise": (["--set", "exploration.sigma=-1"], "exploration.sigma must be finite"),
    "nan noise": (["--set", "exploration.sigma=.nan"], "exploration.sigma must be finite"),
    "OU overshoots": (["--set", "exploration.theta=-5"], "exploration.theta must be in [0, 1]"),
    "negative redraw": (["--set", "exploration.resample_every=-1"], "resample_every must be >= 0"),
    "no hidden layer": (["--set", "actor.hidden_sizes=[]"], "actor.hidden_sizes must name"),
    "bad final init": (["--set", "actor.final_layer_init=-1"], "final_layer_init must be"),
    "negative seed": (["--seed", "-1"], "seed must be in [0, 2**63)"),
    "huge seed": (["--seed", str(2**64)], "seed must be in [0, 2**63)"),
    "run name escapes": (["--run-name", "../../x"], "must be a plain folder name"),
    "learning never starts": (
        ["--agent", "ddpg-vadam-zoo", "--total-steps", "2000"],
        "total_steps 2000 ends before learning starts (learning_starts 10000)",
    ),
    "seeds and num-seeds": (["--seeds", "0-1", "--num-seeds", "2"], "not both"),
    "resume with --set": (["--resume", "somewhere", "--set", "batch_size=3"], "--set cannot"),
    "resume with --seed": (["--resume", "somewhere", "--seed", "3"], "--seed cannot"),
    "resume with --log-dir": (["--resume", "somewhere"], "--log-dir cannot change it"),
    # A replay buffer of 10^11 transitions (~17 TB) and a batch of 2M rows (~90 GB of
    # activations): refused from the estimate, before anything is allocated.
    "buffer too big": (["--set", "buffer_size=100000000000"], "GiB available"),
    "batch too big": (["--set", "batch_size=2000000"], "lower buffer_size or batch_size"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(case: str, tmp_path: Path):
    args, message = BAD_INPUT[case]
    result = run_cli("train", "--log-dir", str(tmp_path / "runs"), "--no-progress", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "run directory" not in result.stdout  # refused before the run is announced
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_missing_run_dir_is_a_clear_error(tmp_path: Path):
    result = run_cli("train", "--resume", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_resume_of_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path):
    run_cli(*pendulum_args(tmp_path, "run", steps=1000), check=True)
    run = tmp_path / "run"
    (run / "summary.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = sorted(p.name for p in run.iterdir())
    result = run_cli("train", "--resume", str(run))
    assert (
        result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr
    )
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.expensive
def test_a_rejected_resume_changes_nothing_in_the_run_dir(tmp_path: Path):
    run_cli(*pendulum_args(tmp_path, "run", steps=1000), check=True)
    run = tmp_path / "run"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint["generator_device"] = "cuda"  # as if it had been trained on a GPU
    torch.save(checkpoint, run / "checkpoint.pt")
    before = files(run)
    result = run_cli("train", "--resume", str(run), "--total-steps", "2000", "--device", "cpu")
    assert result.returncode == 2 and "resume it with --device cuda" in result.stderr
    assert files(run) == before

    (run / "config.yaml").write_text("actor: [unclosed")
    for command in (["train", "--resume", str(run)], ["eval", str(run)], ["export", str(run)]):
        result = run_cli(*command)
        assert result.returncode == 2 and "config.yaml" in result.stderr, command
        assert "Traceback" not in result.stderr, command


def files(run: Path) -> dict[str, bytes]:
    """The run's files but its lock (which holds the pid of the last process to take it)."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def test_the_parent_pid_from_compare_binds_train_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # compare sets it for its runs; pid 1 is not our parent, as if compare had died.
    monkeypatch.setenv("VADAM_RL_PARENT_PID", "1")
    assert "ddpg-vadam" in run_cli("agents", check=True).stdout  # other commands ignore it
    result = run_cli(*pendulum_args(tmp_path, "orphan", steps=1000))
    assert result.returncode == 130 and "is gone" in result.stderr
    assert not (tmp_path / "orphan").exists()  # stopped before anything was written


def test_agents_lists_every_preset():
    result = run_cli("agents", check=True)
    for name in [
        "ddpg-vadam",
        "ddpg-adam",
        "ddpg-adam-plain",
        "ddpg-vadagrad",
        "ddpg-adam-explore",
    ]:
        assert name in result.stdout


@pytest.mark.expensive
def test_a_run_uses_one_thread_unless_told_otherwise(tmp_path: Path, monkeypatch):
    """One thread by default (OpenMP threads that wait for each other stall beside other
    work); OMP_NUM_THREADS, then --threads, override it. Printed where the run starts."""
    import conftest

    base = {k: v for k, v in conftest.cli_env().items() if k != "OMP_NUM_THREADS"}
    monkeypatch.setattr(conftest, "cli_env", lambda: dict(base))
    short = ["--total-steps", "300", "--set", "learning_starts=200"]
    default = run_cli(*pendulum_args(tmp_path, "default"), *short, check=True)
    assert "threads:       1 (--threads N for more)" in default.stdout
    base["OMP_NUM_THREADS"] = "3"
    from_env = run_cli(*pendulum_args(tmp_path, "env"), *short, check=True)
    assert "threads:       3\n" in from_env.stdout
    flag = run_cli(*pendulum_args(tmp_path, "flag"), *short, "--threads", "2", check=True)
    assert "threads:       2\n" in flag.stdout


def test_the_help_describes_every_subcommand_agents_included():
    result = run_cli("--help")
    assert "List the agent presets" in result.stdout


def test_eval_and_export_take_the_same_policy_of_a_run_by_default(tmp_path: Path):
    from sb3_helpers import make_random_run

    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16], best_step=1000)
    result = run_cli("eval", str(run.path), "--episodes", "1", check=True)
    assert "step_2000.pt" in result.stdout  # the most recent, as export takes it
