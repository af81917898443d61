"""Hierarchical RL (THOR stage 3): episode-level GRPO plus step-level code-generation optimisation.

Modules, one job each: ``config`` (RLParams), ``losses`` (the objective's
terms as pure functions), ``batch`` (rollouts to groups, prefixes and rows),
``policy`` (the trained model's log-probs and weights), ``trainer`` (the
loop over the rollout engine and accelerate), ``run`` (the run folder:
checkpoints, metrics, samples), ``report`` (notebook 03's checks and curves).
CLI: ``python -m thor_core.rl --config params/cpu/03_rl.yaml [--name value ...]``,
also under ``accelerate launch``.
"""
