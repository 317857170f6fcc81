"""The learner: DDPG's networks, losses and update, its optimizers and exploration strategies.

Nothing here knows about run directories, loops or speed-ups: ``vadam_rl.fast`` wraps the
update from outside and ``vadam_rl.training`` drives it.
"""
