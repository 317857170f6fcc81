"""Stable-Baselines3 zips: export a run's mean policy as a genuine SB3 DDPG or TD3 zip, read
SB3 zips."""
