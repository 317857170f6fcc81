"""Runs: the loop, the replay buffer, the collector, checkpoints, logging and the run directory.

``run.train`` trains one run and ``run.train_population`` K seeds of one preset in one
process, by the same path (a single run is a population of one).
"""
