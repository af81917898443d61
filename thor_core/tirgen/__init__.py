"""TIRGen (THOR stage 1): actor-critic generation of tool-integrated reasoning data for the SFT cold start.

Modules, one job each: ``config`` (TIRGenParams), ``actor_critic`` (the actor writes, the critic turns a step into
code, the sandbox runs it: the paper's Algorithm 1), ``critic`` (the critic's prompt and verdict), ``filters`` (the
paper's format, code and correctness filters), ``steps`` (the stage's steps in order: problems, CoT pre-filter,
generation, filtering and export; ``run`` = all of them; shards and their merge), ``report`` (notebook 01's tables,
funnel and token-source views). The export is the SFT dataset of ``thor_core.data.sft_examples``.
CLI: ``python -m thor_core.tirgen --help``.
"""
