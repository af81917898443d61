"""SFT (THOR stage 2): the cold start on TIRGen's data, with TRL's SFTTrainer.

Modules, one job each: ``config`` (SFTParams: this kit's settings beside TRL's), ``train`` (the run: dataset,
TRL configuration, LoRA, the resumable training), ``folder`` (the run folder: checkpoints, the loss log, the summary),
``report`` (notebook 02's overview, loss curve and held-out before/after check). CLI: ``python -m thor_core.sft``.
"""
