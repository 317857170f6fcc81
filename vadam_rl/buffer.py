"""Replay buffer preallocated on the training device: ``add`` a batch, ``sample`` a minibatch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Batch(NamedTuple):
    """A minibatch of transitions; every field is on the buffer's device.

    obs, next_obs: (batch, obs_dim); actions: (batch, act_dim) squashed in [-1, 1];
    rewards, terminated: (batch, 1). ``terminated`` is 1 only for true terminal states: an
    episode cut by a time limit (truncation) still bootstraps from ``next_obs``.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor


class ReplayBuffer:
    """FIFO ring buffer of transitions, sampled uniformly with a seeded generator.

    Storage is a handful of preallocated tensors on ``device``: no Python object per
    transition, and sampling is one ``randint`` plus one gather per field, with no host round
    trip. The generator must live on ``device``.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        leading: tuple[int, ...] = (),
    ) -> None:
        """``leading``: dimensions in front of the storage, e.g. (K,) for K agents filled in
        lockstep (see ``population.agent.PopulationBuffer``)."""
        if capacity <= 0:
            raise ValueError(f"Invalid capacity: {capacity} (must be > 0)")
        self.capacity = capacity
        self.device = torch.device(device)
        self.generator = generator
        shape = (*leading, capacity)
        self.obs = torch.zeros((*shape, obs_dim), device=self.device)
        self.actions = torch.zeros((*shape, act_dim), device=self.device)
        self.rewards = torch.zeros((*shape, 1), device=self.device)
        self.next_obs = torch.zeros((*shape, obs_dim), device=self.device)
        self.terminated = torch.zeros((*shape, 1), device=self.device)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self, obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor, terminated: Tensor
    ) -> None:
        """Append n transitions: obs/next_obs (n, obs_dim), actions (n, act_dim), rewards and
        terminated (n,), each behind the ``leading`` dimensions if any. Oldest transitions are
        overwritten once the buffer is full."""
        n = obs.shape[-2]
        index: slice | Tensor = slice(self.pos, self.pos + n)
        if self.pos + n > self.capacity:  # wraps around (a slice write is cheaper otherwise)
            index = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        self.obs[..., index, :] = obs.to(self.device, torch.float32)
        self.actions[..., index, :] = actions.to(self.device, torch.float32)
        self.rewards[..., index, :] = rewards.to(self.device, torch.float32).unsqueeze(-1)
        self.next_obs[..., index, :] = next_obs.to(self.device, torch.float32)
        self.terminated[..., index, :] = terminated.to(self.device, torch.float32).unsqueeze(-1)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(
            0, self.size, (batch_size,), device=self.device, generator=self.generator
        )
        return Batch(
            self.obs[index],
            self.actions[index],
            self.rewards[index],
            self.next_obs[index],
            self.terminated[index],
        )

    def state_dict(self) -> dict[str, Tensor | int]:
        """The stored transitions (only the filled part) and the write position."""
        filled = slice(0, self.size)
        return {
            "obs": self.obs[filled].cpu(),
            "actions": self.actions[filled].cpu(),
            "rewards": self.rewards[filled].cpu(),
            "next_obs": self.next_obs[filled].cpu(),
            "terminated": self.terminated[filled].cpu(),
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, capacity is {self.capacity}")
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            stored = state[name]
            assert isinstance(stored, Tensor)
            getattr(self, name)[:size] = stored.to(self.device)
        self.pos = int(state["pos"])
        self.size = size
