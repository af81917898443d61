"""Evaluation: one resumable way to run a model on problems and grade it, and the ladder's rungs (notebook 04).

Modules, one job each: ``runner`` (``evaluate``: rollouts, grading, resumable records, the settings check),
``metrics`` (accuracy, pass@k, tool-call correctness, best-of-N curves), ``report`` (tables and rendered examples),
``code`` (HumanEval-style code benchmarks), ``before_after`` (the held-out before/after check that SFT and RL share),
``rungs`` (T1-T6: which model runs how, and notebook 04's tables and figures).
CLI: ``python -m thor_core.evaluation --help``.
"""
