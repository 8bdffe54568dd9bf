"""Hyper-parameter search on the validation split: the objective, the search space and the Optuna sweeper."""
