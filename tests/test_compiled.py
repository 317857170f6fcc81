"""The compiled update (``TrainConfig.compile``): one graph, the eager update's arithmetic.

References: torch.optim.Adam (vadam_rl.optim.Adam's graph mode must take its steps) and the
eager update in float64 (compiling may reassociate floats, nothing more). Each compiled
learner costs a compilation (seconds), so the networks are tiny and the cases few.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import tensors
from learners import double_learner, fast, make_batch, make_config
from torch._logging._internal import warning_once  # (its cache: see the compiled test)

from vadam_rl.config import TrainConfig, apply_overrides, load_preset
from vadam_rl.fast.compiled import CompiledUpdate, compile_wanted, planned_updates, resolve_auto
from vadam_rl.optim import Adam

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU


def float64_params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (4,), (2, 4), (2,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]


def two_groups(params, **adam):
    """Two param groups that differ in every hyperparameter the graph step reads."""
    groups = [
        {"params": params[:2], "lr": 1e-2, "weight_decay": 0.1},
        {"params": params[2:], "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6},
    ]
    return Adam(groups, **adam)


def gradient_closure(params, step: int):
    def closure():
        g = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        return torch.zeros(())

    return closure


def test_adam_graph_step_takes_torch_adams_steps():
    """Prepared steps (scalars eagerly, arithmetic from tensors) against ``Adam.step``; the
    first step is Adam's own (it creates the state)."""
    mine, reference = float64_params(), float64_params()
    optimizer = two_groups(mine, fused=True)
    optimizer.enter_graph_mode()
    torch_adam = two_groups(reference, foreach=False)
    for step in range(8):
        optimizer.prepare_graph_step()
        optimizer.step(gradient_closure(mine, step))
        optimizer.finish_graph_step()
        torch_adam.step(gradient_closure(reference, step))
    for p, q in zip(mine, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(
                optimizer.state[p][key], torch_adam.state[q][key], rtol=1e-12, atol=1e-14
            )
    # The gradients did not survive the step: a compiled graph need not output them.
    assert all(p.grad is None for p in mine)


def graph_steps(params, optimizer, steps) -> None:
    optimizer.enter_graph_mode()
    for step in steps:
        optimizer.prepare_graph_step()
        optimizer.step(gradient_closure(params, step))
        optimizer.finish_graph_step()


def test_adam_graph_step_rereads_the_step_count_after_a_reload():
    straight = float64_params()
    optimizer = two_groups(straight, fused=True)
    graph_steps(straight, optimizer, range(6))

    first = float64_params()
    first_optimizer = two_groups(first, fused=True)
    graph_steps(first, first_optimizer, range(3))
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    resumed_optimizer = two_groups(resumed, fused=True)
    resumed_optimizer.enter_graph_mode()
    resumed_optimizer.prepare_graph_step()  # no state yet: nothing to prepare
    resumed_optimizer.finish_graph_step()
    resumed_optimizer.load_state_dict(copy.deepcopy(first_optimizer.state_dict()))
    graph_steps(resumed, resumed_optimizer, range(3, 6))
    assert all(torch.equal(p, q) for p, q in zip(resumed, straight, strict=True))
    assert int(resumed_optimizer.state[resumed[0]]["step"]) == 6


def test_adam_graph_step_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="amsgrad"):
        Adam(float64_params(), amsgrad=True).enter_graph_mode()
    params = float64_params()
    optimizer = Adam(params[:2])
    optimizer.enter_graph_mode()
    optimizer.step(gradient_closure(params[:2], 0))  # Adam's own first step
    optimizer.add_param_group({"params": params[2:]})
    optimizer.step(gradient_closure(params, 1))  # the groups' step counts now differ
    with pytest.raises(RuntimeError, match="one step count"):
        optimizer.prepare_graph_step()


def test_a_failed_compiled_update_leaves_no_step_half_prepared():
    """A caller that catches the error and goes on gets Adam's steps, none skipped."""
    params, reference = float64_params(), float64_params()
    optimizer = Adam(params, lr=0.1)
    taken = []

    def update(batch):
        loss = optimizer.step(gradient_closure(params, len(taken)))
        taken.append(batch)
        return {"loss": loss}

    def fails(batch):
        raise RuntimeError("boom")

    compiled_update = CompiledUpdate(update, [optimizer])
    compiled_update.compiled = fails  # stands in for a compiled call that raises
    compiled_update(0)  # no Adam state yet: eager
    with pytest.raises(RuntimeError, match="boom"):
        compiled_update(1)
    compiled_update.compiled = update  # the compiled function, run eagerly
    compiled_update(2)
    torch_adam = torch.optim.Adam(reference, lr=0.1, foreach=False)
    for step in range(2):
        torch_adam.step(gradient_closure(reference, step))
    assert taken == [0, 2]
    for p, q in zip(params, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert int(optimizer.state[params[0]]["step"]) == 2


def compiled_twins(config: TrainConfig, agents: int = 1):
    """The same float64 learner twice: eager, and with ``compile=True``."""

    def learner(compile_: bool):
        cfg = copy.deepcopy(config)
        cfg.compile = compile_
        return double_learner(cfg, seeds=range(agents))

    return learner(False), learner(True)


# Single-agent Vadam compiled is what the reload test below runs; each case costs a
# compilation (15-30 s), so the suite keeps two.
@pytest.mark.parametrize(
    ("algorithm", "actor_optimizer", "agents"),
    [("ddpg", "adam", 1), ("ddpg", "vadam", 3), ("td3", "vadam", 2)],
)
@pytest.mark.expensive
def test_the_compiled_update_is_one_graph_per_phase_equal_to_the_eager_update(
    algorithm, actor_optimizer, agents
):
    """Critic (Adam), actor (Adam, or Vadam with its weight noise), Polyak: one graph (TD3:
    one for its critic-only updates, one for its full ones)."""
    from torch._dynamo.utils import counters  # no public "what was compiled" query

    config = make_config(actor_optimizer, action_layer=0 if algorithm == "td3" else 1)
    config.algorithm = algorithm
    eager, compiled = compiled_twins(config, agents)
    assert compiled.speed_ups.compile_scope == "whole update"
    counters.clear()
    dynamo_warnings = Records()
    logging.getLogger("torch._dynamo").addHandler(dynamo_warnings)
    warning_once.cache_clear()  # dynamo says each warning once per process
    for step in range(8):
        batch = make_batch(agents=agents, seed=step)
        got, want = fast(compiled)(batch), fast(eager)(batch)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-12)
    mine, theirs = tensors(compiled.state_dict()), tensors(eager.state_dict())
    assert mine.keys() == theirs.keys()
    for key in theirs:
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-9, atol=1e-12)
    # The first update of each phase ran eagerly (no optimizer state yet).
    assert counters["stats"]["unique_graphs"] == len(compiled.phases)
    # Graph-mode steps bypass torch.optim's profiler hook, which dynamo would drop with a
    # "Profiler record function ... will be ignored" warning (printed by every compiled run).
    logging.getLogger("torch._dynamo").removeHandler(dynamo_warnings)
    assert not [m for m in dynamo_warnings.messages if "record function" in m]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.expensive
def test_a_reloaded_compiled_agent_continues_bit_identically():
    """What a resumed run relies on: after ``load_state_dict`` the next compiled updates are
    the ones the original agent takes (the reload is compiled from its first update)."""
    config = make_config("vadam", action_layer=1)
    config.compile = True
    original = double_learner(config)
    for step in range(3):
        fast(original)(make_batch(seed=step))
    resumed = double_learner(config, seeds=[1])
    resumed.load_state_dict(copy.deepcopy(original.state_dict()))
    resumed.actor_optimizer.generator.set_state(original.actor_optimizer.generator.get_state())
    for step in range(3, 6):
        batch = make_batch(seed=step)
        got, want = fast(resumed)(batch), fast(original)(batch)
        assert all(torch.equal(got[key], want[key]) for key in want)
    mine, theirs = tensors(resumed.state_dict()), tensors(original.state_dict())
    assert all(torch.equal(mine[key], theirs[key]) for key in theirs)


def test_optimizers_without_a_graph_mode_stay_eager():
    """Where an optimizer cannot step inside a graph (VadaGrad), nothing is compiled."""
    config = make_config("vadagrad", action_layer=1)
    config.compile = True
    learner = double_learner(config)
    assert not learner.speed_ups.compiled
    assert learner.speed_ups.compile_scope.startswith("none (the optimizers cannot")


def test_compile_auto_stays_eager_without_a_cxx_compiler(monkeypatch: pytest.MonkeyPatch):
    preset = load_preset("ddpg-adam")
    monkeypatch.setenv("CXX", "no-such-compiler-anywhere")
    assert not compile_wanted(preset, CPU)
    assert compile_wanted(apply_overrides(preset, ["compile=true"]), CPU)  # asked for: tried


def test_compile_auto_compiles_long_cpu_runs_only():
    preset = load_preset("ddpg-adam")  # compile: auto, 3M steps
    assert preset.compile == "auto"
    assert compile_wanted(preset, CPU)
    assert not compile_wanted(preset, CUDA)  # there cuda_graph is the fast path
    short = apply_overrides(preset, ["total_steps=20000", "learning_starts=1000"])
    assert planned_updates(short) == 19_000 and not compile_wanted(short, CPU)
    pendulum = load_preset("ddpg-adam", "Pendulum-v1")  # what the tests train
    assert not compile_wanted(pendulum, CPU)
    assert compile_wanted(apply_overrides(pendulum, ["compile=true"]), CUDA)
    assert not compile_wanted(apply_overrides(preset, ["compile=false"]), CPU)


def test_a_new_run_saves_what_auto_resolved_to(tmp_path):
    """So that resuming, or extending with --total-steps, keeps the update's arithmetic."""
    from vadam_rl.config import load_config_file
    from vadam_rl.training.run import train

    long_run = load_preset("ddpg-adam")
    assert resolve_auto(long_run, CPU).compile is True
    assert resolve_auto(long_run, CUDA).compile is False
    config = apply_overrides(
        load_preset("ddpg-adam", "Pendulum-v1"),
        ["total_steps=300", "learning_starts=200", "eval_every=0", "eval_episodes=1",
         "actor.hidden_sizes=[8,8]", "critic.hidden_sizes=[8,8]", "device=cpu"],
    )  # fmt: skip
    assert config.compile == "auto"
    train(config, tmp_path / "run", progress_bar=False)
    assert load_config_file(tmp_path / "run" / "config.yaml").compile is False


def test_a_wrong_compile_value_names_every_accepted_one():
    from vadam_rl.config import ConfigError

    with pytest.raises(ConfigError, match=r"true or false.*one of auto"):
        apply_overrides(load_preset("ddpg-adam"), ["compile=maybe"])


def test_the_cli_announces_a_compiled_update(capsys: pytest.CaptureFixture[str]):
    from vadam_rl.commands.train import announce_compile

    announce_compile(apply_overrides(load_preset("ddpg-adam"), ["device=cpu"]))
    assert "compiled (torch.compile" in capsys.readouterr().out
    announce_compile(apply_overrides(load_preset("ddpg-adam", "Pendulum-v1"), ["device=cpu"]))
    assert capsys.readouterr().out == ""
