"""LoRA on the rater's transformers model: which layers get adapters, and folding them back into plain weights.

Training injects the adapters (engines.fvq_model.FVQRaterModel.inject_lora); bundles are saved merged, and a
checkpoint that still carries adapters is merged before it is served (engines.cuda_rater) or exported.
"""

from __future__ import annotations

from torch import nn


def lora_targets(family: str, vision: bool) -> str:
    """Regex over module names: the LLM's q/k/v/o projections, plus the vision tower's attention."""
    llm = r".*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    if not vision or family == "qwen2":
        return llm + "$"
    if family in ("qwen2_vl", "qwen2_5_vl"):
        vis = r".*visual\.blocks\.\d+\.attn\.(qkv|proj)"
    else:
        vis = r".*vision_tower\.encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|projection_layer)"
    return f"({llm}|{vis})$"


def merge_lora(module: nn.Module, safe_merge: bool = False) -> None:
    """Folds every LoRA branch into its base layer and puts the plain layer back, in place (`safe_merge`: PEFT
    refuses weights that turn non-finite)."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(module.named_modules()):
        if isinstance(m, LoraLayer):
            if safe_merge:
                m.merge(safe_merge=True)
            else:
                m.merge()
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, m.get_base_layer())


def lora_layer_count(module: nn.Module) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in module.modules())


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merges the LoRA branches of an FVQRaterModel (or any module with injected PEFT LoRA layers) into their
    base layers and removes the adapter modules, in place. Refuses weights that turn non-finite (PEFT's
    safe merge). Returns the model."""
    merge_lora(model, safe_merge=True)
    if hasattr(model, "lora_injected"):
        model.lora_injected = False
        model.config.lora_merged = True
    if lora_layer_count(model):
        raise RuntimeError("LoRA layers are left after the merge")
    return model


__all__ = ["lora_layer_count", "lora_targets", "merge_and_unload", "merge_lora"]
