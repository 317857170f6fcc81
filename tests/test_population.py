"""Population training: K seeds in one process train as their K single runs would."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli, tensors
from torch import nn

from vadam_rl import run_dir as layout
from vadam_rl.agent.batch import Batch
from vadam_rl.agent.exploration import make_exploration
from vadam_rl.agent.registry import make_learner
from vadam_rl.agent.stacking import StackedLinear, select_agent, stack_agents, stack_modules
from vadam_rl.commands.cli import main
from vadam_rl.commands.compare import Job, run_state
from vadam_rl.commands.train import parse_seeds
from vadam_rl.config import ConfigError, TrainConfig, apply_overrides, load_preset
from vadam_rl.errors import NonFiniteError, UserError
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators
from vadam_rl.training import saves as population_saves
from vadam_rl.training.records import read_evaluations
from vadam_rl.training.run import train, train_population

SEEDS = [0, 1, 2]


def small_config(preset: str, seed: int, total_steps: int = 1_200) -> TrainConfig:
    # 200 random steps, then 1000 updates: the "first 1000 updates".
    return apply_overrides(
        load_preset(preset, "Pendulum-v1"),
        [
            "actor.hidden_sizes=[32,32]",
            "critic.hidden_sizes=[32,32]",
            "learning_starts=200",
            f"total_steps={total_steps}",
            "eval_every=600",
            "eval_episodes=2",
            f"seed={seed}",
        ],
    )


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) if a.numel() else 0.0


@pytest.mark.parametrize("preset", ["ddpg-vadam", "ddpg-adam", "ddpg-param-noise"])
@pytest.mark.expensive
def test_population_of_three_trains_like_three_single_runs(preset: str, tmp_path: Path):
    # The whole loop, as a user runs it. Batched float32 matmuls reassociate sums, and 1000
    # updates of an RL loop amplify that machine-dependently (AVX2 vs AVX-512 kernels), so
    # numbers are compared in float64 below; here what must hold exactly holds exactly.
    for seed in SEEDS:
        train(small_config(preset, seed), tmp_path / f"single{seed}", progress_bar=False)
    pop_dirs = [tmp_path / f"pop{seed}" for seed in SEEDS]
    train_population([small_config(preset, s) for s in SEEDS], pop_dirs, progress_bar=False)

    for seed, pop_dir in zip(SEEDS, pop_dirs, strict=True):
        single, pop = checkpoint(tmp_path / f"single{seed}"), checkpoint(pop_dir)
        # Every random stream was consumed exactly as in the single run (a shared noise
        # stream, or a draw too many or too few, changes the generator's state)...
        assert torch.equal(single["generator"], pop["generator"])
        assert single["collector"] == pop["collector"] or _same_counters(single, pop)
        assert single["progress"]["updates"] == pop["progress"]["updates"] == 1000
        # ...and the state has the same tensors, and evaluations happened at the same steps.
        assert tensors(single["agent"]).keys() == tensors(pop["agent"]).keys()
        steps = [r["step"] for r in read_evaluations(tmp_path / f"single{seed}")]
        assert [r["step"] for r in read_evaluations(pop_dir)] == steps


def _float64_learner(configs: list[TrainConfig], obs_dim: int, act_dim: int):
    """The learner of these configs' seeds as training builds it (K = len(configs))."""
    generators = AgentGenerators([torch.Generator().manual_seed(c.seed) for c in configs])
    learner = make_learner(
        configs[0], obs_dim, act_dim, torch.device("cpu"), [c.seed for c in configs], generators
    )
    return learner, generators


@pytest.mark.parametrize(
    "preset",
    [
        "ddpg-vadam",
        "ddpg-adam",
        "ddpg-param-noise",
        "ddpg-noisynet",
        "ddpg-vadam-adaptive",
        "td3",
        "td3-vadam",
        "td3-vadam-adaptive",
        "td3-param-noise",
        "td3-noisynet",
        "ddpg-vadam-shaped",
        "ddpg-vogn-shaped",
        "td3-vadam-shaped",
        "td3-vogn-shaped",
    ],
)
def test_population_updates_and_acts_as_its_single_agents_in_float64(preset: str):
    """The stacked population against K single runs' learners, through the production
    update path (speed-ups included) and the exploration's acting and adaptation, in float64.

    In float64 the only difference left is the order of sums in batched matmuls: each
    operation contributes about eps = 2.2e-16, and 150 updates of the loop amplify it; 1e-9
    leaves an amplification of 1e6, far more than the ~1e4 that 1000 float32 updates showed
    (gaps of ~1e-3 at eps 6e-8). A population mistake is of order one: a loss averaged over
    agents instead of per agent scales each gradient by 1/K, a shared noise stream gives
    other draws, a wrong agent's row another network.
    """
    configs = [small_config(preset, seed) for seed in SEEDS]
    obs_dim, act_dim, batch_size, envs = 3, 1, 16, 2
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        singles = [_float64_learner([c], obs_dim, act_dim) for c in configs]
        population, pop_generators = _float64_learner(configs, obs_dim, act_dim)
        single_updates = [
            speed_up(agent, config).update
            for (agent, _), config in zip(singles, configs, strict=True)
        ]
        pop_update = speed_up(population, configs[0]).update
        explore = [
            make_exploration(c.exploration, a.actor, a.actor_optimizer, g)
            for (a, g), c in zip(singles, configs, strict=True)
        ]
        pop_explore = make_exploration(
            configs[0].exploration, population.actor, population.actor_optimizer, pop_generators
        )
        data = torch.Generator().manual_seed(99)
        for update in range(150):
            obs = torch.randn(len(SEEDS), envs, obs_dim, generator=data)
            actions = torch.cat([e.act(obs[k : k + 1]).behaviour for k, e in enumerate(explore)])
            torch.testing.assert_close(pop_explore.act(obs).behaviour, actions, rtol=1e-9, atol=0)
            if update % 40 == 39:  # episode ends: parameter noise redraws
                done = torch.ones(envs, dtype=torch.bool)
                for e in explore:
                    e.on_episode_end(done.expand(1, envs))
                pop_explore.on_episode_end(done.expand(len(SEEDS), envs))
            batch = Batch(
                torch.randn(len(SEEDS), batch_size, obs_dim, generator=data),
                torch.rand(len(SEEDS), batch_size, act_dim, generator=data) * 2 - 1,
                torch.randn(len(SEEDS), batch_size, 1, generator=data),
                torch.randn(len(SEEDS), batch_size, obs_dim, generator=data),
                (torch.rand(len(SEEDS), batch_size, 1, generator=data) < 0.05).double(),
            )
            for k, (update_k, e) in enumerate(zip(single_updates, explore, strict=True)):
                update_k(Batch(*(field[k : k + 1] for field in batch)))
                e.after_update(batch.obs[k : k + 1])
            pop_update(batch)
            pop_explore.after_update(batch.obs)

        for k, ((agent, generators), e) in enumerate(zip(singles, explore, strict=True)):
            assert torch.equal(generators[0].get_state(), pop_generators[k].get_state())
            left = tensors(agent.agent_state_dict(0))
            right = tensors(population.agent_state_dict(k))
            assert left.keys() == right.keys()
            for name in left:
                # Step counts stay float32, as in torch.optim.Adam; the rest is float64.
                assert left[name].dtype == torch.float64 or name.endswith("/step"), name
                torch.testing.assert_close(right[name], left[name], rtol=1e-9, atol=1e-12)
            left = tensors(select_agent(e.state_dict(), 0))
            right = tensors(select_agent(pop_explore.state_dict(), k))
            for name in left:
                torch.testing.assert_close(right[name], left[name], rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(previous)


def _same_counters(single: dict, pop: dict) -> bool:
    a, b = single["collector"], pop["collector"]
    return torch.equal(a["episodes_started"], b["episodes_started"]) and all(
        a[key] == b[key] for key in ("episodes_finished", "at_boundary")
    )


# (the adaptive kinds keep per-agent scalars in their state: each agent's noise scale)
@pytest.mark.parametrize(
    "preset",
    [
        "ddpg-vadam",
        "ddpg-param-noise",
        "ddpg-vadam-adaptive",
        # The shaped presets' new state: VOGN's (per-example curvature) in both learners and
        # TD3's kappa; the Vadam-shaped ones differ from the adaptive ones in numbers only.
        pytest.param("ddpg-vogn-shaped", marks=pytest.mark.expensive),
        pytest.param("td3-vogn-shaped", marks=pytest.mark.expensive),
    ],
)
def test_resumed_population_continues_exactly(preset: str, tmp_path: Path):
    straight = [tmp_path / f"straight{s}" for s in SEEDS[:2]]
    train_population([small_config(preset, s) for s in SEEDS[:2]], straight, progress_bar=False)
    resumed = [tmp_path / f"resumed{s}" for s in SEEDS[:2]]
    first = [small_config(preset, s, total_steps=800) for s in SEEDS[:2]]
    train_population(first, resumed, progress_bar=False)
    rest = [small_config(preset, s) for s in SEEDS[:2]]
    train_population(rest, resumed, resume=True, progress_bar=False)
    for a, b in zip(straight, resumed, strict=True):
        left, right = tensors(checkpoint(a)["agent"]), tensors(checkpoint(b)["agent"])
        assert all(torch.equal(left[k], right[k]) for k in left)
        # The first session's final evaluation (step 800) is an extra row; the rest agree.
        resumed_returns = {r["step"]: r["mean_return"] for r in read_evaluations(b)}
        for row in read_evaluations(a):
            assert resumed_returns[row["step"]] == row["mean_return"]


def test_a_population_with_async_envs_trains_exactly_as_with_sync_ones(tmp_path: Path):
    # async_envs=true steps the K agents' envs in subprocesses (what a GPU population wants):
    # the same transitions in the same order, so the same numbers, bit for bit.
    runs = {}
    for mode in ("false", "true"):
        configs = [
            apply_overrides(small_config("ddpg-vadam", s, total_steps=400), [f"async_envs={mode}"])
            for s in SEEDS[:2]
        ]
        dirs = [tmp_path / f"{mode}{s}" for s in SEEDS[:2]]
        train_population(configs, dirs, progress_bar=False)
        runs[mode] = [checkpoint(d) for d in dirs]
    for sync, asynchronous in zip(runs["false"], runs["true"], strict=True):
        for part in ("agent", "buffer"):
            left, right = tensors(sync[part]), tensors(asynchronous[part])
            assert left.keys() == right.keys()
            assert all(torch.equal(left[k], right[k]) for k in left), part
        assert torch.equal(sync["generator"], asynchronous["generator"])


def test_an_agent_of_a_population_resumes_as_a_single_run(tmp_path: Path):
    dirs = [tmp_path / f"pop{s}" for s in SEEDS[:2]]
    configs = [small_config("ddpg-adam", s, total_steps=800) for s in SEEDS[:2]]
    train_population(configs, dirs, progress_bar=False)
    summary = train(small_config("ddpg-adam", 1, 1_000), dirs[1], resume=True, progress_bar=False)
    assert summary["total_steps"] == 1_000
    assert [row["step"] for row in read_evaluations(dirs[1])] == [600, 800, 1000]

    # Now at 800 and 1000 steps, they no longer resume together, and saying so changes nothing.
    saved = [(run_dir / "checkpoint.pt").read_bytes() for run_dir in dirs]
    with pytest.raises(UserError, match=r"stopped at different steps \(800, 1000\)"):
        configs = [small_config("ddpg-adam", s, 1_200) for s in SEEDS[:2]]
        train_population(configs, dirs, resume=True, progress_bar=False)
    assert [(run_dir / "checkpoint.pt").read_bytes() for run_dir in dirs] == saved


def test_a_population_killed_while_saving_resumes_all_runs_from_one_step(tmp_path: Path):
    # A population's K checkpoints are written as checkpoint.pending.pt (tagged with one save
    # id) and renamed over the old ones only once all K exist. A kill while writing leaves
    # pending files and only old checkpoints (the save is dropped); a kill while renaming
    # leaves some runs renamed (the save is completed). Either way the runs resume together,
    # exactly, also when the kill hit the first save (no old checkpoint at all).
    straight = [tmp_path / f"straight{s}" for s in SEEDS[:2]]
    train_population(
        [small_config("ddpg-adam", s, 1_000) for s in SEEDS[:2]], straight, progress_bar=False
    )
    dirs = [tmp_path / f"run{s}" for s in SEEDS[:2]]
    train_population(
        [small_config("ddpg-adam", s, 600) for s in SEEDS[:2]], dirs, progress_bar=False
    )
    first = [(d / "checkpoint.pt").read_bytes() for d in dirs]  # the first save, at 600
    before = tmp_path / "before"
    for d in dirs:
        shutil.copytree(d, before / d.name)
    train_population(
        [small_config("ddpg-adam", s, 800) for s in SEEDS[:2]],
        dirs,
        resume=True,
        progress_bar=False,
    )
    assert not any((d / "checkpoint.pending.pt").exists() for d in dirs)
    second = [(d / "checkpoint.pt").read_bytes() for d in dirs]  # the second save, at 800
    after = tmp_path / "after"
    for d in dirs:
        shutil.copytree(d, after / d.name)
    # (checkpoint.pt, checkpoint.pending.pt) of each run, the rest of the run directories as
    # the session that was saving left them -> the step resumed from
    killed = {
        "while_writing": ([(first[0], second[0]), (first[1], None)], after, 600),
        "while_renaming": ([(second[0], None), (first[1], second[1])], after, 800),
        "first_save_while_renaming": ([(first[0], None), (None, first[1])], before, 600),
    }
    for case, (files, session, resumed_from) in killed.items():
        _lay_out(dirs, session, files)
        if case == "while_renaming":  # the API: train_population itself settles the save
            rest = [small_config("ddpg-adam", s, 1_000) for s in SEEDS[:2]]
            train_population(rest, dirs, resume=True, progress_bar=False)
        else:  # the CLI, which looks for checkpoints before it calls train_population
            main(["train", "--resume", *map(str, dirs), "--total-steps", "1000", "--no-progress"])
        for a, b in zip(straight, dirs, strict=True):
            assert not (b / "checkpoint.pending.pt").exists()
            left, right = tensors(checkpoint(a)["agent"]), tensors(checkpoint(b)["agent"])
            assert all(torch.equal(left[k], right[k]) for k in left), case
            # Evaluations after the step resumed from were dropped and redone.
            steps = [row["step"] for row in read_evaluations(b)]
            assert steps == sorted({600, resumed_from, 1000}), (case, steps)

    # Killed while renaming; run 0 (renamed) is resumed alone and saves again before run 1 is
    # resumed: its tagged checkpoint completes run 1's save at once.
    _lay_out(dirs, after, [(second[0], None), (first[1], second[1])])
    main(["train", "--resume", str(dirs[0]), "--total-steps", "1000", "--no-progress"])
    assert checkpoint(dirs[1])["progress"]["step"] == 800
    assert not (dirs[1] / "checkpoint.pending.pt").exists()

    # The same runs moved elsewhere together: their tags still find each other, and settling
    # the copies leaves the originals alone.
    _lay_out(dirs, after, [(second[0], None), (first[1], second[1])])
    moved = [tmp_path / "moved" / d.name for d in dirs]
    for d, m in zip(dirs, moved, strict=True):
        shutil.copytree(d, m)
    train_population(
        [small_config("ddpg-adam", s, 1_000) for s in SEEDS[:2]],
        moved,
        resume=True,
        progress_bar=False,
    )
    left, right = tensors(checkpoint(straight[1])["agent"]), tensors(checkpoint(moved[1])["agent"])
    assert all(torch.equal(left[k], right[k]) for k in left)
    assert (dirs[1] / "checkpoint.pending.pt").exists()

    # Killed while writing the first save: nothing to resume; compare starts both afresh.
    for d in dirs:
        shutil.rmtree(d)
        shutil.copytree(before / d.name, d)
        _before_final_outputs(d)
        (d / "checkpoint.pt").unlink()
    (dirs[0] / "checkpoint.pending.pt").write_bytes(first[0])
    jobs = [
        Job("ddpg-adam", s, "Pendulum-v1", 1_000, (), "cpu", d)
        for s, d in zip(SEEDS[:2], dirs, strict=True)
    ]
    assert [run_state(job) for job in jobs] == ["start", "start"]
    assert not (dirs[0] / "checkpoint.pending.pt").exists()
    layout.clear_unstarted_run(dirs[0])  # only what a run writes before its first checkpoint


def test_a_save_shared_with_a_run_in_training_is_left_alone(tmp_path: Path):
    # Run a holds the pending file of an interrupted save of {a, b}; b was resumed alone and
    # trains in another process. Whether the save completed can no longer be read off b's
    # files: planning leaves a's file alone, and training a now is refused, not started
    # from a checkpoint the save might later replace.
    a, b = tmp_path / "a", tmp_path / "b"
    for run_dir in (a, b):
        run_dir.mkdir()
    pending = a / layout.PENDING_CHECKPOINT
    torch.save({population_saves.TAG: population_saves.tag(a, [a, b], "s1")}, pending)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(b)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        population_saves.settle(a)  # planning (compare, the CLI's check): hands off
        assert pending.is_file()
        with layout.RunLocks() as locks, pytest.raises(UserError, match="training now"):
            locks.hold(a)
            population_saves.settle(a)  # about to train a
        assert pending.is_file()
    finally:
        holder.kill()
        holder.wait()
    population_saves.settle(a)  # b is idle again: a's save, never complete, is dropped
    assert not pending.exists()


HOLD_LOCK = """
import sys, time
from vadam_rl import run_dir as layout
with layout.RunLocks() as locks:
    locks.hold(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
"""


def _lay_out(dirs: list[Path], session: Path, files: list[tuple]) -> None:
    """The run directories as a kill during a save of ``session`` leaves them, with the
    given (checkpoint.pt, checkpoint.pending.pt) contents (None: absent)."""
    for d, (current, pending) in zip(dirs, files, strict=True):
        shutil.rmtree(d)
        shutil.copytree(session / d.name, d)
        _before_final_outputs(d)
        (d / "checkpoint.pt").unlink()
        if current is not None:
            (d / "checkpoint.pt").write_bytes(current)
        if pending is not None:
            (d / "checkpoint.pending.pt").write_bytes(pending)


def _before_final_outputs(run_dir: Path) -> None:
    """A run directory as a kill during its session's final save leaves it: what comes
    after that save (summary.json, model.zip) is not written yet."""
    (run_dir / "summary.json").unlink()
    (run_dir / "model.zip").unlink()


def test_save_together_writes_no_checkpoint_unless_it_can_write_all(tmp_path: Path):
    from vadam_rl.training.build import build_runs
    from vadam_rl.training.checkpoint import save_checkpoint, save_together

    configs = [small_config("ddpg-adam", s) for s in SEEDS[:2]]
    runs = build_runs(configs, [tmp_path / f"run{s}" for s in SEEDS[:2]])
    first, second = runs.runs
    first.run_dir.mkdir()
    save_checkpoint(runs, first)  # the last good checkpoint, at step 0
    second.run_dir.write_text("")  # a file where run 1's directory should be: its save fails
    runs.progress.step = 400
    try:
        with pytest.raises(OSError):
            save_together(runs)
    finally:
        runs.close()
    assert sorted(p.name for p in first.run_dir.iterdir()) == ["checkpoint.pt"]
    assert checkpoint(first.run_dir)["progress"]["step"] == 0


def test_a_non_finite_agent_stops_the_population_and_says_how_the_others_go_on(
    tmp_path: Path,
):
    dirs = [tmp_path / f"run{s}" for s in SEEDS[:2]]
    train_population(
        [small_config("ddpg-adam", s, 400) for s in SEEDS[:2]], dirs, progress_bar=False
    )
    state = checkpoint(dirs[1])
    for weight in state["agent"]["critic"].values():
        weight.mul_(1e20)  # agent 1's Q values overflow float32 at its first update
    torch.save(state, dirs[1] / "checkpoint.pt")
    longer = [
        apply_overrides(small_config("ddpg-adam", s, 800), ["log_every=100"]) for s in SEEDS[:2]
    ]
    with pytest.raises(NonFiniteError) as caught:
        train_population(longer, dirs, resume=True, progress_bar=False)
    message = str(caught.value)
    assert f"critic_loss became non-finite at step 401 in {dirs[1]}" in message
    hint = f"vadam-rl train --resume {dirs[0]} --total-steps 800"  # (config.yaml says 400)
    assert message.endswith(f"the other runs continue with: {hint}")
    assert [checkpoint(d)["progress"]["step"] for d in dirs] == [400, 400]
    main([*hint.split()[1:], "--no-progress"])  # the hint, followed
    assert json.loads((dirs[0] / "summary.json").read_text())["total_steps"] == 800


def test_population_refuses_runs_that_differ_in_more_than_the_seed(tmp_path: Path):
    configs = [small_config("ddpg-adam", 0), small_config("ddpg-adam", 1)]
    configs[1].actor.optimizer.lr = 1.234e-3
    with pytest.raises(ConfigError, match=r"actor\.optimizer\.lr"):
        train_population(configs, [tmp_path / "a", tmp_path / "b"], progress_bar=False)
    assert not (tmp_path / "a").exists()
    ivon = [small_config("ddpg-adam", s) for s in (0, 1)]
    for config in ivon:
        config.actor.optimizer.name = "ivon"
    with pytest.raises(ConfigError, match="population"):
        train_population(ivon, [tmp_path / "a", tmp_path / "b"], progress_bar=False)


def test_each_agents_buffer_state_is_a_single_runs():
    from vadam_rl.rng import AgentGenerators
    from vadam_rl.training.buffer import AgentBuffer, ReplayBuffer

    generators = AgentGenerators([torch.Generator().manual_seed(k) for k in range(2)])
    buffer = AgentBuffer(8, 3, 1, torch.device("cpu"), generators)
    obs = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    buffer.add(obs, torch.zeros(2, 5, 1), torch.ones(2, 5), obs + 1, torch.zeros(2, 5))
    single = ReplayBuffer(8, 3, 1)
    single.add(obs[1], torch.zeros(5, 1), torch.ones(5), obs[1] + 1, torch.zeros(5))
    state, expected = buffer.agent_state_dict(1), single.state_dict()
    assert state.keys() == expected.keys()
    for name in state:
        assert torch.equal(torch.as_tensor(state[name]), torch.as_tensor(expected[name])), name


def test_stacked_linear_is_k_linear_layers_in_float64():
    torch.manual_seed(0)
    layers = [nn.Linear(5, 3).double() for _ in range(4)]
    stacked = StackedLinear(layers)
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    expected = torch.stack([x[k] @ layers[k].weight.T + layers[k].bias for k in range(4)])
    torch.testing.assert_close(stacked(x), expected, rtol=1e-12, atol=1e-12)


def test_stacked_modules_keep_names_and_round_trip_state():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Tanh()) for _ in range(3)]
    stacked = stack_modules(nets)
    assert [n for n, _ in stacked.named_parameters()] == [n for n, _ in nets[0].named_parameters()]
    state = stacked.state_dict()
    for k, net in enumerate(nets):
        single = select_agent(state, k)
        assert all(torch.equal(single[name], value) for name, value in net.state_dict().items())
    back = stack_agents([select_agent(state, k) for k in range(3)])
    assert all(torch.equal(back[name], value) for name, value in state.items())
    with pytest.raises(ValueError, match="disagree"):
        stack_agents([{"step": 1}, {"step": 2}])


def test_cli_trains_seeds_as_one_population(tmp_path: Path):
    common = ["--env", "Pendulum-v1", "--log-dir", str(tmp_path), "--no-progress", *TINY]
    steps = ["--total-steps", "500", "--set", "learning_starts=200", "--set", "eval_every=500"]
    result = run_cli("train", "--agent", "ddpg-adam", "--seeds", "3-4", *common, *steps)
    assert result.returncode == 0, result.stderr[-3000:]
    for seed in (3, 4):
        run_dir = tmp_path / f"ddpg-adam_Pendulum-v1_s{seed}"
        assert (run_dir / "summary.json").is_file() and (run_dir / "model.zip").is_file()
        assert f"seed: {seed}" in (run_dir / "config.yaml").read_text()
    result = run_cli("train", "--seeds", "4-2", *common)  # bad input: one line, exit 2
    assert result.returncode == 2 and "expected seeds like 0-4" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--seeds", "0,0"], "names a seed twice"),
        (["--seeds", "0-1", "--seed", "3"], "give one of --seed, --seeds and --num-seeds"),
        (["--seeds", "0-1", "--set", "critic.optimizer.name=ivon"], "population"),
    ],
)
def test_cli_refuses_what_a_population_cannot_do(bad, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *bad, "--env", "Pendulum-v1", "--log-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_seed_lists():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,7") == [0, 2, 7]
    assert parse_seeds("0-1,5") == [0, 1, 5]
