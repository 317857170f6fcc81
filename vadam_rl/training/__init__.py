"""Runs: the loop, the replay buffer, the collector, checkpoints, logging and the run directory.

``train`` trains one run; ``train_population`` trains K seeds of one preset in one process.
"""
