"""The trained policy: loading it (full or LoRA), its token log-probs, and its weights for the rollout engine.

Log-probs and entropies come from TRL's ``selective_log_softmax`` and
``entropy_from_logits`` on logits divided by the sampling temperature (the
distribution the engine sampled from, as TRL does). Only the completion's
logits are materialised (``logits_to_keep``): for a 150k vocabulary the full
logits of a long prompt would dominate memory.

Not covered: the reference model for the KL term (a frozen copy made by the
trainer when ``kl_beta > 0``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from thor_core.models import load_model_and_tokenizer


def load_policy(name: str, method: str = "full", lora_r: int = 16, lora_alpha: int = 32, gradient_checkpointing=False):
    """(model, tokenizer): fp32 weights, trainable in full or through a LoRA adapter on every linear layer."""
    model, tokenizer = load_model_and_tokenizer(name, dtype="float32")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
        )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method == "lora":
            model.enable_input_require_grads()
    model.train()
    return model, tokenizer


def token_logprobs(
    model, batch: dict[str, torch.Tensor], temperature: float = 1.0, entropy: bool = False, bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per completion token: log pi(token | context) [B, C], and the entropy [B, C] (no grad) when asked.

    ``bf16``: the forward pass under bf16 autocast (faster only where the device has bf16 instructions:
    docs/BENCHMARKS.md, "bf16 autocast on the CPU"); the logits are taken back to fp32 before the log-softmax.
    """
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    C = batch["trained"].shape[1]
    device = batch["input_ids"].device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            logits_to_keep=C + 1,
            use_cache=False,
        )
    logits = out.logits[:, :-1, :].float()  # position t predicts completion token t
    if temperature != 1.0:
        logits = logits / temperature
    logp = selective_log_softmax(logits, batch["input_ids"][:, -C:])
    ent = None
    if entropy:
        with torch.no_grad():
            ent = entropy_from_logits(logits.detach())
    return logp, ent


def engine_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under the base model's names, LoRA merged, for ``Backend.load_weights``.

    For a LoRA model the adapter is merged into a copy of each adapted layer's
    weight (W + scale B A), so the training model is left as it is.
    """
    if not hasattr(model, "peft_config"):
        yield from ((name, p.detach()) for name, p in model.named_parameters())
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, p in base.named_parameters():
        if "lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        layer_name = owner.removesuffix(".base_layer")
        if owner.endswith(".base_layer") and layer_name in adapted and leaf == "weight":
            with torch.no_grad():
                yield f"{layer_name}.weight", p.detach() + adapted[layer_name].get_delta_weight("default")
        else:
            yield name.replace(".base_layer.", "."), p.detach()
