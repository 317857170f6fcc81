import pytest

from vadam_rl.config import ConfigError, apply_overrides, list_presets, load_preset

PAPER_PRESETS = ["ddpg-vadam", "ddpg-adam", "ddpg-adam-plain", "ddpg-vadagrad", "ddpg-adam-explore"]


def test_every_shipped_preset_loads():
    for name in list_presets():
        assert load_preset(name).agent == name


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_use_the_reference_code_settings(name):
    config = load_preset(name)
    assert config.env_id == "HalfCheetah-v5"
    assert (config.batch_size, config.gamma, config.tau, config.buffer_size) == (
        64,
        0.99,
        0.001,
        1_000_000,
    )
    assert config.actor.hidden_sizes == [400, 300] and config.critic.hidden_sizes == [400, 300]
    assert config.critic.action_layer == 1
    assert config.critic.optimizer.name == "adam" and config.critic.optimizer.lr == 1e-3
    assert (config.eval_every, config.eval_episodes) == (10_000, 20)


def test_baselines_differ_from_vadam_only_in_actor_and_exploration():
    vadam = load_preset("ddpg-vadam")
    assert (vadam.actor.optimizer.name, vadam.exploration.kind) == ("vadam", "posterior")
    # The reference's lambda 1e-8 and floor 1e4 on a loss summed over B = 64, in the
    # mean-loss convention of vadam_rl.optim.Vadam (its docstring derives the mapping).
    opt, batch = vadam.actor.optimizer, vadam.batch_size
    assert opt.train_set_size == batch**2 and opt.prior_precision == pytest.approx(batch * 1e-8)
    assert opt.precision_floor == 1e4 and opt.damping_before_bias_correction
    assert (
        load_preset("ddpg-adam").actor.optimizer.name,
        load_preset("ddpg-adam").exploration.kind,
    ) == ("adam", "gaussian")
    assert load_preset("ddpg-adam-plain").exploration.kind == "none"
    assert load_preset("ddpg-vadagrad").actor.optimizer.name == "vadagrad"
    assert load_preset("ddpg-adam-explore").actor.optimizer.sigma_lr == 0.01


def test_zoo_presets_use_an_sb3_loadable_critic():
    for name in ("ddpg-vadam-zoo", "ddpg-adam-zoo"):
        config = load_preset(name)
        assert config.critic.action_layer == 0 and config.batch_size == 256


def test_overrides_are_typed():
    config = apply_overrides(
        load_preset("ddpg-adam"),
        ["actor.optimizer.lr=3e-4", "actor.hidden_sizes=[64, 64]", "total_steps=1_000"],
    )
    assert config.actor.optimizer.lr == 3e-4 and config.actor.hidden_sizes == [64, 64]
    assert config.total_steps == 1000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("actor.optimizer.lr=abc", "expected a number"),
        ("actor.nonsense=1e-3", "unknown config key 'actor.nonsense'"),
        ("nonsense=1", "unknown config key"),
        ("batch_size=2.5", "expected an integer"),
        ("exploration.kind=psychic", "expected one of"),
        ("gamma=1.5", "gamma"),
        ("no-equals-sign", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_preset("ddpg-adam"), [override])


def test_optimizer_fields_have_a_shortcut_under_the_network():
    config = apply_overrides(
        load_preset("ddpg-vadam"), ["actor.lr=3e-4", "actor.train_set_size=100"]
    )
    assert config.actor.optimizer.lr == 3e-4 and config.actor.optimizer.train_set_size == 100


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="ddpg-vadam"):
        load_preset("ddpg-nope")


def test_posterior_exploration_needs_a_variational_actor():
    with pytest.raises(ConfigError, match="variational"):
        apply_overrides(load_preset("ddpg-vadam"), ["actor.optimizer.name=adam"])


def test_vogn_trains_an_exploring_actor_but_not_a_critic():
    # The learners hand VOGN per-example squared gradients of the actor's loss only.
    config = apply_overrides(load_preset("ddpg-vadam"), ["actor.optimizer.name=vogn"])
    assert config.exploration.kind == "posterior" and config.exploration.reuse_draw_in_update
    with pytest.raises(ConfigError, match=r"critic\.optimizer\.name=vogn"):
        apply_overrides(load_preset("ddpg-vadam"), ["critic.optimizer.name=vogn"])


def test_ivon_cannot_reuse_the_behaviour_draw_in_its_step():
    config = load_preset("ddpg-vadam")
    assert config.exploration.reuse_draw_in_update  # the reference code's one draw per step
    with pytest.raises(ConfigError, match="reuse_draw_in_update"):
        apply_overrides(config, ["actor.optimizer.name=ivon"])
    apply_overrides(
        load_preset("ddpg-vadam"),
        ["actor.optimizer.name=ivon", "exploration.reuse_draw_in_update=false"],
    )


def test_a_reused_draw_must_not_wait_across_steps_without_an_update():
    # resample_every=0 draws at episode starts; with train_freq=2 such a draw could wait for
    # the next update across a checkpoint that does not hold it.
    with pytest.raises(ConfigError, match="resample_every=1"):
        apply_overrides(load_preset("ddpg-vadam"), ["exploration.resample_every=0", "train_freq=2"])
    apply_overrides(load_preset("ddpg-vadam"), ["exploration.resample_every=0"])
    apply_overrides(load_preset("ddpg-vadam"), ["train_freq=2"])


def test_vadam_is_another_name_for_posterior_exploration_and_num_samples_reaches_vadam():
    import torch

    from vadam_rl.agent.exploration import PosteriorSampling, make_exploration
    from vadam_rl.agent.networks import Actor
    from vadam_rl.agent.optimizers import build_optimizer

    config = load_preset("ddpg-vadam")
    apply_overrides(config, ["exploration.kind=vadam", "actor.optimizer.num_samples=2"])
    actor = Actor(3, 1, [4])
    optimizer = build_optimizer(actor.parameters(), config.actor.optimizer)
    assert optimizer.num_samples == 2
    strategy = make_exploration(config.exploration, actor, optimizer, torch.Generator())
    assert isinstance(strategy, PosteriorSampling)


def test_out_of_range_optimizer_settings_are_config_errors():
    from vadam_rl.agent.optimizers import check_optimizers

    with pytest.raises(ConfigError, match=r"actor\.optimizer: Invalid num_samples"):
        check_optimizers(
            apply_overrides(load_preset("ddpg-vadam"), ["actor.optimizer.num_samples=0"])
        )
