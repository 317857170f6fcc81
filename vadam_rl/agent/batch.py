"""The learner's input: a minibatch of transitions."""

from __future__ import annotations

from typing import NamedTuple

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
