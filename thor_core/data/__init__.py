"""Problems and datasets: benchmarks (embedded offline sets and hub loaders), generated training problems, the one
held-out rule that notebooks 02, 03 and 04 share, and the SFT example format TIRGen writes and SFT reads.

Modules: ``benchmarks`` (``load_benchmark``, ``Problem``), ``problems`` (procedural problems, overlap checks),
``heldout`` (``heldout_problems``), ``sft_examples`` (trajectories to token-exact SFT examples and back).
"""
