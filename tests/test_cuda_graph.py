"""``cuda_graph=true``: the captured and replayed update equals the eager one.

Adam's graphed update equals the eager one bit for bit; Vadam's graph mode (draws and step
count prepared outside the graph) equals its eager step up to float rounding, and the
graphed update equals graph mode run eagerly bit for bit. The graph tests need a CUDA
device (CI has none: they run in GPU sessions, see bench/gpu_session.sh); graph mode's
arithmetic and the config checks run everywhere.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tensors

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.agent.registry import make_learner
from vadam_rl.config import apply_overrides, list_presets, load_preset
from vadam_rl.fast.cuda_graph import why_eager
from vadam_rl.fast.select import speed_up
from vadam_rl.optim import VadaGrad, Vadam
from vadam_rl.rng import AgentGenerators

OBS, ACT = 5, 3
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_config(preset: str, device: str, cuda_graph: bool):
    overrides = [f"device={device}", f"cuda_graph={str(cuda_graph).lower()}"]
    overrides += ["actor.hidden_sizes=[32,24]", "critic.hidden_sizes=[32,24]"]
    return apply_overrides(load_preset(preset), overrides)


def adam_config(device: str, cuda_graph: bool):
    return small_config("ddpg-adam", device, cuda_graph)


def make_agent(config, device: torch.device, agents: int) -> ActorCritic:
    gens = AgentGenerators([torch.Generator(device=device).manual_seed(k) for k in range(agents)])
    agent = make_learner(config, OBS, ACT, device, list(range(agents)), gens)
    agent.speed_ups = speed_up(agent, config)  # type: ignore[attr-defined]
    return agent


def update(agent: ActorCritic, batch: Batch) -> dict[str, torch.Tensor]:
    """One update with the speed-ups ``make_agent`` attached (graphed where they are)."""
    return agent.speed_ups.update(batch)  # type: ignore[attr-defined]


def graph(agent: ActorCritic, phase: str = "update"):
    return agent.speed_ups.graphed[phase]  # type: ignore[attr-defined]


def make_batches(n: int, agents: int, device: torch.device) -> list[Batch]:
    g = torch.Generator(device=device).manual_seed(1)
    lead = (agents,)

    def randn(*shape):
        return torch.randn(*lead, 64, *shape, device=device, generator=g)

    return [
        Batch(randn(OBS), randn(ACT).tanh(), randn(1), randn(OBS), (randn(1) > 1.5).float())
        for _ in range(n)
    ]


def assert_same_state(a: ActorCritic, b: ActorCritic) -> None:
    mine, theirs = tensors(a.state_dict()), tensors(b.state_dict())
    assert mine.keys() == theirs.keys()
    different = [k for k in mine if not torch.equal(mine[k].cpu(), theirs[k].cpu())]
    assert not different, different[:5]


def test_the_update_is_graphed_only_where_it_can_be():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU
    adam = adam_config("cpu", cuda_graph=True)
    adam_agent = make_agent(adam, cpu, 1)
    adam_optimizers = [adam_agent.actor_optimizer, adam_agent.critic_optimizer]
    vadam = apply_overrides(load_preset("ddpg-vadam"), ["cuda_graph=true"])
    vadam_agent = make_agent(vadam, cpu, 1)
    vadam_optimizers = [vadam_agent.actor_optimizer, vadam_agent.critic_optimizer]
    vadagrad = apply_overrides(load_preset("ddpg-vadagrad"), ["cuda_graph=true"])
    vadagrad_agent = make_agent(vadagrad, cpu, 1)
    vadagrad_optimizers = [vadagrad_agent.actor_optimizer, vadagrad_agent.critic_optimizer]
    assert why_eager(adam, cuda, adam_optimizers, hand_written=True) is None
    assert why_eager(vadam, cuda, vadam_optimizers, hand_written=True) is None
    assert "cuda_graph=false" in why_eager(
        adam_config("cpu", cuda_graph=False), cuda, adam_optimizers, hand_written=True
    )
    assert "cpu" in why_eager(adam, cpu, adam_optimizers, hand_written=True)
    assert "built-in" in why_eager(adam, cuda, adam_optimizers, hand_written=False)
    assert "capturable" in why_eager(vadagrad, cuda, vadagrad_optimizers, hand_written=True)
    compiled = apply_overrides(adam, ["compile=true"])
    assert "compile" in why_eager(compiled, cuda, adam_optimizers, hand_written=True)


def test_adam_presets_ask_for_it_and_every_preset_accepts_it():
    for preset in list_presets():
        config = apply_overrides(load_preset(preset), ["cuda_graph=true"])
        adam = config.actor.optimizer.name == config.critic.optimizer.name == "adam"
        assert load_preset(preset).cuda_graph == adam, preset


def test_cuda_graph_does_nothing_on_cpu():
    agent = make_agent(adam_config("cpu", cuda_graph=True), torch.device("cpu"), 1)
    assert not agent.speed_ups.graphed and "cpu" in agent.speed_ups.eager_reason
    assert not agent.actor_optimizer.param_groups[0]["capturable"]
    update(agent, make_batches(1, 1, torch.device("cpu"))[0])


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("agents", [1, 3])
def test_graphed_updates_equal_eager_ones_and_survive_a_reload(agents):
    device = torch.device("cuda")
    eager = make_agent(adam_config("cuda", cuda_graph=False), device, agents)
    graphed = make_agent(adam_config("cuda", cuda_graph=True), device, agents)
    assert graphed.speed_ups.graphed and not eager.speed_ups.graphed
    batches = make_batches(30, agents, device)
    for batch in batches[:20]:
        got, want = update(graphed, batch), update(eager, batch)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert graph(graphed).captured
    assert_same_state(graphed, eager)
    # Loading a checkpoint replaces the optimizer state the graph points to: it recaptures.
    reloaded = make_agent(adam_config("cuda", cuda_graph=True), device, agents)
    for batch in batches[:5]:  # captured already, then loaded over
        update(reloaded, batch)
    reloaded.load_state_dict(graphed.state_dict())
    assert not graph(reloaded).captured
    for batch in batches[20:]:
        update(reloaded, batch)
        update(eager, batch)
    assert graph(reloaded).captured
    assert_same_state(reloaded, eager)


# -- Vadam's graph mode (CPU, float64) ---------------------------------------------------------


def twin_vadams(**kwargs) -> tuple[list[list[torch.Tensor]], list[Vadam]]:
    """Two Vadams on equal float64 parameters with equally seeded generators."""
    torch.manual_seed(0)
    start = [torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    params = [[p.clone().requires_grad_() for p in start] for _ in range(2)]
    optimizers = [
        Vadam(ps, train_set_size=50, lr=0.05, generator=torch.Generator().manual_seed(7), **kwargs)
        for ps in params
    ]
    return params, optimizers


def quadratic_closure(params: list[torch.Tensor], optimizer: Vadam, step: int):
    target = torch.full((4, 3), 0.1 * step, dtype=torch.float64)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((params[0] - target) ** 2).mean() + (params[1] ** 4).sum()
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_samples": 3},
        {"damping_before_bias_correction": True, "prior_precision": 2.0, "init_precision": 80.0},
    ],
)
def test_vadam_graph_mode_takes_the_eager_steps(kwargs):
    (eager_params, graph_params), (eager, graph) = twin_vadams(**kwargs)
    graph.enter_graph_mode()
    behaviour = [[torch.empty_like(p) for p in ps] for ps in (eager_params, graph_params)]
    for step in range(12):
        reuse = step % 3 != 0  # behaviour draws reused by the step, and steps drawing afresh
        if reuse:
            eager.sample_into(behaviour[0], reuse_in_next_step=True)
            graph.sample_into(behaviour[1], reuse_in_next_step=True)
        graph.prepare_graph_step()
        eager.step(quadratic_closure(eager_params, eager, step))
        graph.step(quadratic_closure(graph_params, graph, step))
    # The same draws in the same order: the generators end in the same state.
    assert torch.equal(eager.generator.get_state(), graph.generator.get_state())
    for mine, theirs in zip(graph_params, eager_params, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)
        assert graph.state[mine]["step"] == eager.state[theirs]["step"] == 12
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(
                graph.state[mine][key], eager.state[theirs][key], rtol=1e-12, atol=1e-14
            )


def test_vadam_graph_mode_refuses_an_unprepared_step_and_others_have_none():
    (params, _), (optimizer, _) = twin_vadams()
    optimizer.enter_graph_mode()
    with pytest.raises(RuntimeError, match="prepare_graph_step"):
        optimizer.step(quadratic_closure(params, optimizer, 0))
    optimizer.prepare_graph_step()
    optimizer.step(quadratic_closure(params, optimizer, 0))
    with pytest.raises(RuntimeError, match="prepare_graph_step"):  # once per step
        optimizer.step(quadratic_closure(params, optimizer, 1))
    vadagrad = VadaGrad([torch.zeros(2, requires_grad=True)], train_set_size=10)
    with pytest.raises(ValueError, match="no graph mode"):
        vadagrad.enter_graph_mode()


# -- Vadam-DDPG graphed (CUDA) -------------------------------------------------------------------


def vadam_config(device: str, cuda_graph: bool):
    return small_config("ddpg-vadam", device, cuda_graph)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("agents", [1, 3])
def test_graphed_vadam_updates_equal_graph_mode_run_eagerly(agents):
    """With the behaviour draw reused by each update, as ddpg-vadam trains."""
    device = torch.device("cuda")
    graphed = make_agent(vadam_config("cuda", cuda_graph=True), device, agents)
    reference = make_agent(vadam_config("cuda", cuda_graph=False), device, agents)
    plain = make_agent(vadam_config("cuda", cuda_graph=False), device, agents)
    assert graphed.speed_ups.graphed and not reference.speed_ups.graphed
    reference.actor_optimizer.enter_graph_mode()
    behaviour = [copy.deepcopy(a.actor) for a in (graphed, reference, plain)]
    for batch in make_batches(20, agents, device):
        for agent, actor in zip((graphed, reference, plain), behaviour, strict=True):
            agent.actor_optimizer.sample_into(actor.parameters(), reuse_in_next_step=True)
        reference.actor_optimizer.prepare_graph_step()
        got, want = update(graphed, batch), update(reference, batch)
        update(plain, batch)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert graph(graphed).captured
    assert_same_state(graphed, reference)
    for mine, theirs in zip(graphed.actor.parameters(), plain.actor.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)  # float32 rounding


# -- What a replay repeats, errors, reloads -----------------------------------------------------


def test_graph_mode_update_replays_the_same_ops_at_every_step():
    """What a replay repeats is the captured op sequence: after warmup, every graph-mode
    update must dispatch the same ops with the same non-tensor arguments on the same
    persistent tensors (no step-dependent Python scalars, no random ops). Runs on CPU."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from vadam_rl.fast.cuda_graph import make_capturable

    class Trace(TorchDispatchMode):
        def __init__(self, names):
            super().__init__()
            self.names, self.ops = names, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat, _ = tree_flatten((args, kwargs or {}))
            sig = tuple(
                self.names.get(a.untyped_storage().data_ptr(), "tmp")
                if isinstance(a, torch.Tensor)
                else repr(a)
                if isinstance(a, int | float | bool | str | None)
                else type(a).__name__  # dtypes, devices, profiler handles
                for a in flat
            )
            self.ops.append((str(func), sig))
            return func(*args, **(kwargs or {}))

    config = apply_overrides(
        vadam_config("cpu", cuda_graph=False),
        ["actor.optimizer.num_samples=2", "actor.optimizer.damping_before_bias_correction=false"],
    )
    agent = make_agent(config, torch.device("cpu"), 1)
    prepare, _ = make_capturable([agent.critic_optimizer, agent.actor_optimizer])
    behaviour = copy.deepcopy(agent.actor)
    static = make_batches(1, 1, torch.device("cpu"))[0]
    traces = []
    for batch in make_batches(6, 1, torch.device("cpu")):
        agent.actor_optimizer.sample_into(behaviour.parameters(), reuse_in_next_step=True)
        prepare()
        for s, b in zip(static, batch, strict=True):
            s.copy_(b)
        persistent = [*static, *agent._online_params, *agent._target_params]
        for optimizer in (agent.actor_optimizer, agent.critic_optimizer):
            persistent += [
                v
                for st in optimizer.state.values()
                for v in st.values()
                if isinstance(v, torch.Tensor)
            ]
        persistent += [b for draw in agent.actor_optimizer._graph_noise for b in draw]
        persistent += agent.actor_optimizer._graph_scalars
        names = {t.untyped_storage().data_ptr(): f"t{i}" for i, t in enumerate(persistent)}
        with Trace(names) as trace:
            agent.update(static)  # the eager update (its speed_ups' would be graphed)
        traces.append(trace.ops)
    assert {len(t) for t in traces[1:]} == {len(traces[1])}
    diffs = [
        (i, a, b)
        for t in traces[2:]
        for i, (a, b) in enumerate(zip(traces[1], t, strict=True))
        if a != b
    ]
    assert not diffs, diffs[:2]
    assert not [op for op, _ in traces[-1] if any(r in op for r in ("rand", "normal", "bernoulli"))]


def test_vadam_graph_mode_refuses_a_double_prepare_and_keeps_state_on_error():
    (params, _), (optimizer, _) = twin_vadams()
    optimizer.enter_graph_mode()
    optimizer.prepare_graph_step()
    with pytest.raises(RuntimeError, match="twice"):
        optimizer.prepare_graph_step()
    optimizer.step(quadratic_closure(params, optimizer, 0))
    optimizer.state[params[1]]["step"] += 1  # out of step with params[0]
    before = [optimizer.state[p]["step"] for p in params]
    optimizer._graph_step_prepared = False
    with pytest.raises(RuntimeError, match="one step count"):
        optimizer.prepare_graph_step()
    assert [optimizer.state[p]["step"] for p in params] == before


def actor_generators(agent: ActorCritic) -> list[torch.Generator]:
    generator = agent.actor_optimizer.generator
    return generator.generators if isinstance(generator, AgentGenerators) else [generator]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("agents", [1, 3])
@pytest.mark.parametrize(
    "extra",
    [[], ["actor.optimizer.num_samples=2", "actor.optimizer.damping_before_bias_correction=false"]],
)
def test_graphed_vadam_survives_a_reload_and_draws_like_eager(agents, extra):
    """Graphed Vadam-DDPG vs plain eager: the same generator states (draws in the eager order)
    and close weights; a checkpoint loaded over a captured graph recaptures, and continues
    exactly as graph mode run eagerly from the same checkpoint."""
    device = torch.device("cuda")
    graphed_config = apply_overrides(vadam_config("cuda", cuda_graph=True), extra)
    plain_config = apply_overrides(vadam_config("cuda", cuda_graph=False), extra)
    graphed = make_agent(graphed_config, device, agents)
    plain = make_agent(plain_config, device, agents)
    batches = make_batches(30, agents, device)

    def run(agent, behaviour, batch, reference=False):
        agent.actor_optimizer.sample_into(behaviour.parameters(), reuse_in_next_step=True)
        if reference:
            agent.actor_optimizer.prepare_graph_step()
        return update(agent, batch)

    behaviours = [copy.deepcopy(a.actor) for a in (graphed, plain)]
    for batch in batches[:10]:
        run(graphed, behaviours[0], batch)
        run(plain, behaviours[1], batch)
    assert graph(graphed).captured
    for a, b in zip(actor_generators(graphed), actor_generators(plain), strict=True):
        assert torch.equal(a.get_state(), b.get_state())
    for mine, theirs in zip(graphed.actor.parameters(), plain.actor.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)

    state = graphed.state_dict()
    reloaded = make_agent(graphed_config, device, agents)
    reference = make_agent(plain_config, device, agents)
    reference.actor_optimizer.enter_graph_mode()
    behaviours = [copy.deepcopy(a.actor) for a in (reloaded, reference)]
    for batch in batches[:5]:  # captured already, then loaded over
        run(reloaded, behaviours[0], batch)
    reloaded.load_state_dict(state)
    reference.load_state_dict(state)
    assert not graph(reloaded).captured
    for agent in (reloaded, reference):  # the same generator state for both
        for g, h in zip(actor_generators(agent), actor_generators(graphed), strict=True):
            g.set_state(h.get_state())
    for batch in batches[10:]:
        got = run(reloaded, behaviours[0], batch)
        want = run(reference, behaviours[1], batch, reference=True)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert graph(reloaded).captured
    assert_same_state(reloaded, reference)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("agents", [1, 3])
def test_graphed_td3_phases_equal_eager_ones(agents):
    """TD3's two phases (critic only; critic, actor and targets) are two graphs, each
    replayed when its update comes, equal to the eager updates bit for bit."""
    device = torch.device("cuda")
    eager = make_agent(small_config("td3", "cuda", cuda_graph=False), device, agents)
    graphed = make_agent(small_config("td3", "cuda", cuda_graph=True), device, agents)
    for batch in make_batches(20, agents, device):
        got, want = update(graphed, batch), update(eager, batch)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert graph(graphed, "critic").captured and graph(graphed, "full").captured
    assert_same_state(graphed, eager)
