"""The engine: one tool loop for every stage, with self-correction and best-of-N named as the paper names them.

Modules: ``rollout`` (``rollout_one``: generate, run each code block in the sandbox, splice the output back, with
token-exact masks; ``run_rollouts`` for many), ``correction`` (self-correction: back off a failed call's suffix and
sample again, the paper's inference-time correction), ``best_of_n`` (choosing one answer of N: majority vote and the
paper's execution-pass-rate selection).
"""
