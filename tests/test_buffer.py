import numpy as np
import pytest
import torch

from vadam_rl.training.buffer import ReplayBuffer


def filled(capacity: int, n: int) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity, obs_dim=2, act_dim=1)
    for i in range(n):
        value = torch.full((1, 2), float(i))
        buffer.add(
            value,
            torch.full((1, 1), 0.5),
            torch.tensor([float(i)]),
            value + 1,
            torch.tensor([i % 2 == 0]),
        )
    return buffer


def test_wraps_around_and_keeps_the_newest_transitions():
    buffer = filled(capacity=5, n=8)
    assert len(buffer) == 5
    assert sorted(buffer.rewards.squeeze(1).tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert buffer.pos == 3


def test_batched_add_wraps_around():
    buffer = ReplayBuffer(4, obs_dim=1, act_dim=1)
    buffer.add(
        torch.arange(3.0)[:, None],
        torch.zeros(3, 1),
        torch.arange(3.0),
        torch.zeros(3, 1),
        torch.zeros(3),
    )
    buffer.add(
        torch.arange(3.0, 6.0)[:, None],
        torch.zeros(3, 1),
        torch.arange(3.0, 6.0),
        torch.zeros(3, 1),
        torch.zeros(3),
    )
    assert buffer.rewards.squeeze(1).tolist() == [4.0, 5.0, 2.0, 3.0]


def test_sample_shapes_dtypes_and_consistency():
    buffer = filled(capacity=100, n=50)
    batch = buffer.sample(32)
    assert batch.obs.shape == (32, 2) and batch.next_obs.shape == (32, 2)
    assert batch.actions.shape == (32, 1)
    assert batch.rewards.shape == (32, 1) and batch.terminated.shape == (32, 1)
    assert all(t.dtype == torch.float32 for t in batch)
    # fields of one sampled row belong to the same transition
    torch.testing.assert_close(batch.obs[:, 0], batch.rewards[:, 0])
    torch.testing.assert_close(batch.next_obs, batch.obs + 1)
    torch.testing.assert_close(batch.terminated[:, 0], (batch.rewards[:, 0] % 2 == 0).float())


def test_sampling_is_reproducible_with_a_seeded_generator():
    def draw(seed: int) -> torch.Tensor:
        buffer = filled(100, 100)
        buffer.generator = torch.Generator().manual_seed(seed)
        return buffer.sample(64).rewards

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_samples_only_filled_slots():
    buffer = filled(capacity=1000, n=10)
    assert buffer.sample(500).rewards.max() <= 9


def test_state_dict_round_trip():
    buffer = filled(capacity=7, n=10)
    other = ReplayBuffer(7, obs_dim=2, act_dim=1)
    other.load_state_dict(buffer.state_dict())
    assert other.pos == buffer.pos and len(other) == len(buffer)
    assert torch.equal(other.obs, buffer.obs) and torch.equal(other.terminated, buffer.terminated)


def test_a_saved_buffer_holds_its_filled_part_not_its_capacity():
    """torch.save writes a tensor view's whole storage: a checkpoint of a 1M-transition
    buffer would carry all 1M slots (168 MB on HalfCheetah) from the first step."""
    import io

    buffer = filled(capacity=100_000, n=10)
    saved = io.BytesIO()
    torch.save(buffer.state_dict(), saved)
    # 10 transitions x (2 + 1 + 1 + 2 floats + 1 bool); the rest is the zip's bookkeeping,
    # which is a few KB whatever the capacity (the capacity alone would be 2.2 MB).
    filled_bytes = 10 * (6 * 4 + 1)
    assert saved.tell() < filled_bytes + 16_384


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(3, 1, 1).sample(1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_storage_and_samples_live_on_the_cuda_device():
    buffer = ReplayBuffer(10, 2, 1, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    buffer.add(
        torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 2), torch.zeros(3)
    )
    assert all(t.device.type == "cuda" for t in buffer.sample(4))


def test_storage_lives_on_the_requested_device():
    buffer = ReplayBuffer(10, 2, 1, device="cpu")
    buffer.add(
        torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 2), torch.zeros(3)
    )
    assert all(t.device.type == "cpu" for t in buffer.sample(4))


def test_the_numpy_path_of_cpu_buffers_stores_and_samples_as_the_torch_path():
    # CPU buffers write and gather through numpy views; CUDA buffers take the torch path,
    # forced here on a CPU so that CI (no GPU) checks one against the other.
    def make(torch_path: bool, leading: tuple[int, ...]) -> ReplayBuffer:
        buffer = ReplayBuffer(7, 3, 2, generator=torch.Generator().manual_seed(0), leading=leading)
        if torch_path:
            buffer._arrays = None
        return buffer

    rng = np.random.default_rng(0)
    for leading in [(), (2,)]:
        host, device = make(False, leading), make(True, leading)
        for _ in range(4):  # 3 transitions at a time: the third add wraps around
            obs, next_obs = rng.normal(size=(2, *leading, 3, 3))  # float64, as envs give them
            actions = torch.rand(*leading, 3, 2)
            rewards, terminated = rng.normal(size=(*leading, 3)), rng.random((*leading, 3)) < 0.5
            for buffer in (host, device):
                buffer.add(obs, actions, rewards, next_obs, terminated)
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            assert torch.equal(getattr(host, name), getattr(device, name)), name
        assert host.terminated.sum() > 0
        if not leading:
            for got, want in zip(host.sample(5), device.sample(5), strict=True):
                assert torch.equal(got, want)
