import gymnasium as gym
import numpy as np
import pytest
import torch

from vadam_rl.agent.exploration import GaussianActionNoise, NoExploration
from vadam_rl.agent.networks import Actor
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.buffer import AgentBuffer
from vadam_rl.training.collector import RolloutCollector, episode_seed, make_vector_env


class ReachTheWall(gym.Env):
    """Observation = step count; terminates at step 3 (a real terminal state)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t == 3, False, {}


gym.register("vadam-test/ReachTheWall-v0", entry_point=ReachTheWall, max_episode_steps=10)


def collector_for(env_id: str, num_envs: int = 1, capacity: int = 1000) -> RolloutCollector:
    envs = make_vector_env(env_id, num_envs)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    generators = AgentGenerators([torch.Generator().manual_seed(0)])  # one agent
    buffer = AgentBuffer(capacity, obs_dim, act_dim, torch.device("cpu"), generators)
    exploration = NoExploration(Actor(obs_dim, act_dim, [8]))
    return RolloutCollector(
        envs, buffer, exploration, seeds=[0], device=torch.device("cpu"), generators=generators
    )


def test_time_limit_truncation_is_stored_as_not_terminated_with_the_true_last_state():
    collector = collector_for("Pendulum-v1")  # 200-step episodes, truncated, never terminated
    collector.collect(210)
    buffer = collector.buffer  # (agent 0's part of each field)
    assert buffer.terminated[0, :210].sum() == 0
    # within an episode next_obs[t] == obs[t+1]; at the cut, next_obs is the last real state
    torch.testing.assert_close(buffer.next_obs[0, :199], buffer.obs[0, 1:200])
    assert not torch.allclose(buffer.next_obs[0, 199], buffer.obs[0, 200])
    assert list(collector.recent_lengths[0]) == [200]


def test_true_termination_is_stored_as_terminated():
    collector = collector_for("vadam-test/ReachTheWall-v0")
    collector.collect(6)
    assert collector.buffer.terminated[0, :6, 0].tolist() == [0, 0, 1, 0, 0, 1]
    assert collector.buffer.next_obs[0, :3, 0].tolist() == [1.0, 2.0, 3.0]
    assert collector.buffer.obs[0, 3, 0].item() == 0.0  # a new episode started
    assert list(collector.recent_returns[0]) == [3.0, 3.0]


def test_random_phase_actions_are_uniform_in_the_squashed_box():
    collector = collector_for("Pendulum-v1")
    collector.collect(500, random_actions=True)
    actions = collector.buffer.actions[0, :500]
    assert actions.min() >= -1 and actions.max() <= 1 and actions.std() > 0.5


def test_vector_envs_write_one_transition_per_env_per_step():
    collector = collector_for("Pendulum-v1", num_envs=3)
    collector.collect(10)
    assert len(collector.buffer) == 30


class Recording:
    """An exploration that keeps every step it answers."""

    def __init__(self, inner) -> None:
        self.inner, self.steps = inner, []

    def act(self, obs):
        self.steps.append(self.inner.act(obs))
        return self.steps[-1]

    def on_episode_end(self, done) -> None:
        self.inner.on_episode_end(done)


def test_action_distance_is_the_mean_gap_between_behaviour_and_mean_actions():
    collector = collector_for("Pendulum-v1", num_envs=3)
    actor = collector.exploration.actor
    generators = AgentGenerators([torch.Generator().manual_seed(1)])
    noise = GaussianActionNoise(actor, sigma=0.3, generator=generators)
    collector.exploration = recording = Recording(noise)
    collector.collect(20)
    gaps = [(s.behaviour.double() - s.mean.double()).norm(dim=-1) for s in recording.steps]
    expected = torch.cat(gaps).mean().item()
    assert expected > 0.1
    assert collector.pop_action_distance().item() == pytest.approx(expected, rel=1e-5)
    assert collector.pop_action_distance() is None  # reset by the read
    # the stored actions are the behaviour's
    stored = collector.buffer.actions[0, :60].reshape(20, 3, -1)
    behaviour = torch.stack([s.behaviour for s in recording.steps]).reshape(20, 3, -1)
    assert torch.equal(stored, behaviour)


def test_every_episode_starts_from_its_own_seed():
    collector = collector_for("Pendulum-v1", num_envs=2)
    collector.collect(1)
    starts = collector.buffer.obs[0, :2].numpy()
    for env_index in range(2):
        env = gym.make("Pendulum-v1")
        expected, _ = env.reset(seed=episode_seed(0, env_index, 0))
        np.testing.assert_allclose(starts[env_index], expected, rtol=1e-6)
    assert episode_seed(0, 0, 1) != episode_seed(0, 0, 0) != episode_seed(1, 0, 0)


def test_serial_vector_env_steps_and_resets_like_gymnasiums_sync_vector_env():
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from vadam_rl.envs import make_env
    from vadam_rl.training.collector import SerialVectorEnv

    fns = [lambda: make_env("Pendulum-v1")] * 2
    ours, theirs = SerialVectorEnv(fns), SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
    assert ours.observation_space == theirs.observation_space
    assert ours.single_action_space == theirs.single_action_space
    actions = np.random.default_rng(0).uniform(-2.0, 2.0, (250, 2, 1))
    for env in (ours, theirs):
        env.reset(seed=[3, 4])
    for t, action in enumerate(actions):
        step, reference = ours.step(action), theirs.step(action)
        for got, want in zip(step[:4], reference[:4], strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        done = np.logical_or(step[2], step[3])
        if done.any():  # Pendulum truncates both at step 200: reset only the first
            with pytest.raises(RuntimeError, match="reset first"):
                ours.step(action)
            mask = np.array([True, False])
            got, want = (
                env.reset(seed=[7, None], options={"reset_mask": mask}) for env in (ours, theirs)
            )
            np.testing.assert_array_equal(got[0][0], want[0][0])
            rest = np.array([False, True])
            for env in (ours, theirs):
                env.reset(seed=[None, 8], options={"reset_mask": rest})
            assert t == 199
    for bad in [np.array([False, False]), np.array([1, 0]), np.array([True])]:
        with pytest.raises(ValueError, match="reset_mask"):
            ours.reset(options={"reset_mask": bad})
    with pytest.raises(ValueError, match="3 seeds for 2 envs"):
        ours.reset(seed=[1, 2, 3])
    ours.close()
    assert ours.closed
