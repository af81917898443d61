"""thor_core: the performance-critical parts of the THOR kit, one package per stage over shared layers.

Top to bottom (a module imports only from layers below its own; pyproject.toml's import-linter contracts check it):

- ``demo`` (what ``make demo`` runs) and ``runs`` (the pipeline: run folders and manifests, ``provenance``,
  headless ``notebooks``, notebook 05's ``ladder``; ``python -m thor_core.runs``);
- the stages, independent of each other: ``tirgen`` (stage 1), ``sft`` (stage 2), ``rl`` (stage 3); each has its
  ``config``, its run, its ``report`` and a ``__main__`` CLI;
- ``evaluation`` (the runner every stage's checks use, metrics, reports, code benchmarks, the shared
  ``before_after`` check, notebook 04's ``rungs``);
- ``engine`` (``rollout``: the one tool loop; ``correction``: self-correction; ``best_of_n``) and ``data``
  (``benchmarks``, generated ``problems``, the one ``heldout`` rule, ``sft_examples``);
- ``backends`` (hf, vLLM, an OpenAI-compatible server) and ``sandbox`` (code execution);
- the base: ``viewer`` and ``plots``; ``grading``, ``params``, ``stats``, ``progress``, ``record``; ``tir``,
  ``models``, ``hardware``; ``files``.

docs/METHOD.md maps the paper onto these modules; docs/DESIGN.md says why the layers are cut this way.
"""

__version__ = "0.1.0"
