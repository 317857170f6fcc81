"""Replay buffers preallocated on the training device: ``add`` a batch, ``sample`` a minibatch
(``AgentBuffer``: K agents' buffers filled in lockstep)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from vadam_rl import rng
from vadam_rl.agent.batch import Batch
from vadam_rl.rng import AgentGenerators

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)
FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """FIFO ring buffer of transitions, sampled uniformly with a seeded generator.

    Storage is a handful of preallocated tensors on ``device``: no Python object per
    transition, and sampling is one ``randint`` plus one gather per field, with no host round
    trip. The generator must live on ``device``. On a CPU the writes and gathers go through
    numpy views of the same storage: a numpy assignment or fancy index on a few hundred
    floats costs less than a torch operator's dispatch, and this runs at every env step.
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
        lockstep (``AgentBuffer``)."""
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
        # Views, not copies: state_dict / load_state_dict keep working on the tensors.
        self._arrays: list[np.ndarray] | None = None
        if self.device.type == "cpu":
            self._arrays = [getattr(self, name).numpy() for name in FIELDS]

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: Tensor | np.ndarray,
        actions: Tensor | np.ndarray,
        rewards: Tensor | np.ndarray,
        next_obs: Tensor | np.ndarray,
        terminated: Tensor | np.ndarray,
    ) -> None:
        """Append n transitions: obs/next_obs (n, obs_dim), actions (n, act_dim), rewards and
        terminated (n,), each behind the ``leading`` dimensions if any; tensors or arrays, of
        any float or bool dtype (stored as float32). Oldest transitions are overwritten once
        the buffer is full."""
        n = obs.shape[-2]
        index: slice | np.ndarray = slice(self.pos, self.pos + n)
        if self.pos + n > self.capacity:  # wraps around (a slice write is cheaper otherwise)
            index = (self.pos + np.arange(n)) % self.capacity
        values = (obs, actions, rewards, next_obs, terminated)
        if self._arrays is not None:
            for array, value in zip(self._arrays, values, strict=True):
                array[..., index, :] = _with_last_dim(_as_array(value), array.ndim)
        else:
            if not isinstance(index, slice):
                index = torch.as_tensor(index, device=self.device)
            for name, value in zip(FIELDS, values, strict=True):
                value = torch.as_tensor(value).to(self.device, torch.float32)
                getattr(self, name)[..., index, :] = _with_last_dim(value, len(self.obs.shape))
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(
            0, self.size, (batch_size,), device=self.device, generator=self.generator
        )
        return self._gather((index,))

    def _gather(self, index: tuple[Tensor, ...]) -> Batch:
        if self._arrays is not None:
            host_index = tuple(i.numpy() for i in index)
            return Batch(*(torch.from_numpy(array[host_index]) for array in self._arrays))
        return Batch(*(getattr(self, name)[index] for name in FIELDS))

    def state_dict(self) -> dict[str, Tensor | int]:
        """The stored transitions (only the filled part) and the write position."""
        filled = slice(0, self.size)
        # clone: on the CPU a slice is a view, and torch.save writes a view's whole storage
        # (a 1M-transition buffer's capacity in every checkpoint, however little is filled).
        state: dict[str, Tensor | int] = {
            name: getattr(self, name)[filled].cpu().clone() for name in FIELDS
        }
        return {**state, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, capacity is {self.capacity}")
        for name in FIELDS:
            stored = state[name]
            assert isinstance(stored, Tensor)
            getattr(self, name)[:size] = stored.to(self.device)
        self.pos = int(state["pos"])
        self.size = size


def _as_array(value: Tensor | np.ndarray) -> np.ndarray:
    """A host array of ``value`` (a view where it already is one)."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _with_last_dim(value: ArrayT, ndim: int) -> ArrayT:
    """(..., n) rewards or flags as (..., n, 1), like their storage; fields with a feature
    dimension as they are."""
    return value if value.ndim == ndim else value[..., None]


class AgentBuffer(ReplayBuffer):
    """K agents' replay buffers of one capacity in (K, capacity, dim) tensors, filled in
    lockstep (``add`` takes (K, n, ...) tensors); agent k's minibatch indices come from
    generator k, as in a run of its own. A single run is K = 1."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        generators: AgentGenerators,
    ) -> None:
        super().__init__(capacity, obs_dim, act_dim, device, leading=(len(generators),))
        self.num_agents = len(generators)
        self.generators = generators
        self.agent_index = torch.arange(self.num_agents, device=self.device).unsqueeze(1)

    def sample(self, batch_size: int) -> Batch:
        """(K, batch_size, ...) fields; row k is agent k's uniform draw from its own data."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = rng.randint(
            self.size, (self.num_agents, batch_size), self.generators, device=self.device
        )
        return self._gather((self.agent_index, index))

    def agent_state_dict(self, agent: int) -> dict[str, Tensor | int]:
        """Agent ``agent``'s buffer in the run directory's format (``ReplayBuffer.state_dict``)."""
        filled = slice(0, self.size)
        state: dict[str, Tensor | int] = {
            name: getattr(self, name)[agent, filled].cpu().clone() for name in FIELDS
        }
        return {**state, "pos": self.pos, "size": self.size}

    def load_agent_state_dict(self, agent: int, state: dict[str, Tensor | int]) -> None:
        size, pos = int(state["size"]), int(state["pos"])
        if not 0 <= size <= self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, capacity is {self.capacity}")
        # Filled from row 0: the write position is the size until the buffer is full.
        if not 0 <= pos < self.capacity or (size < self.capacity and pos != size):
            raise ValueError(
                f"replay buffer write position {pos} does not fit its {size} transitions "
                f"(capacity {self.capacity})"
            )
        if agent > 0 and (size, pos) != (self.size, self.pos):
            raise ValueError("the agents' replay buffers hold different numbers of transitions")
        for name in FIELDS:
            stored, rows = state[name], getattr(self, name)[agent, :size]
            if not isinstance(stored, Tensor) or stored.dtype != rows.dtype:
                found = stored.dtype if isinstance(stored, Tensor) else type(stored).__name__
                raise ValueError(f"replay buffer {name} is {found}, not {rows.dtype}")
            rows[:] = stored.to(self.device)
        self.pos, self.size = pos, size
