"""Refined LLCs (Wang et al., arXiv 2410.02984): which parameters move, and which data count.

A *weight-refined* LLC samples only some of the parameters, the rest staying exactly at w*; a
*data-refined* LLC uses the loss on a subset of the data, with n (and so nβ = n / log n) the size of
that subset. Here a parameter selection is a `ParameterMask`: for each parameter name a boolean
tensor of its shape, True where it moves (whole tensors for layers and modules, slices of the fused
projection weights for attention heads). Masks become one (d,) row per chain, so that chains of
several selections share one batched computation (`sampling.sgld.SGLD.mask`).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from llc_core.errors import LLCInputError
from llc_core.model_function import FlatParams

ParameterMask = dict[str, Tensor]  # parameter name -> bool tensor of its shape, True where it moves


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def mask_from_patterns(shapes: Mapping[str, tuple[int, ...]], patterns: Sequence[str]) -> ParameterMask:
    """Whole parameters whose names match any fnmatch pattern ("layers.0.*", "*.bias", "fc1.weight")."""
    if isinstance(patterns, str) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise LLCInputError(f"refine.parameters = {patterns!r} must be a list of name patterns, e.g. [\"layers.0.*\"]")
    chosen = {name for name in shapes if any(fnmatch.fnmatchcase(name, p) for p in patterns)}
    if not chosen:
        raise LLCInputError(f"no parameter matches {list(patterns)}: the model's parameters are "
                            + ", ".join(list(shapes)[:12]) + (" …" if len(shapes) > 12 else ""))
    return {name: torch.full(shape, name in chosen, dtype=torch.bool) for name, shape in shapes.items()}


def layer_groups(model: nn.Module) -> dict[str, ParameterMask]:
    """One group per module that owns parameters directly (a Linear's weight and bias, a LayerNorm)."""
    shapes = parameter_shapes(model)
    owners: dict[str, list[str]] = {}
    for name in shapes:
        owners.setdefault(name.rpartition(".")[0] or name, []).append(name)
    return {owner: mask_from_patterns(shapes, names) for owner, names in owners.items()}


def head_groups(model: nn.Module) -> dict[str, ParameterMask]:
    """One group per attention head of every nn.MultiheadAttention: the head's rows of the fused
    query/key/value projection (weight and bias) and its columns of the output projection. The output
    bias is shared by all heads, so it belongs to none."""
    shapes = parameter_shapes(model)
    groups = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.MultiheadAttention) or module.in_proj_weight is None:
            continue
        width, heads = module.embed_dim, module.num_heads
        size = width // heads
        for head in range(heads):
            mask = {name: torch.zeros(shape, dtype=torch.bool) for name, shape in shapes.items()}
            rows = torch.cat([torch.arange(part * width + head * size, part * width + (head + 1) * size)
                              for part in range(3)])
            name = f"{prefix}.in_proj_weight" if prefix else "in_proj_weight"
            mask[name][rows] = True
            if module.in_proj_bias is not None:
                mask[name.replace("in_proj_weight", "in_proj_bias")][rows] = True
            mask[name.replace("in_proj_weight", "out_proj.weight")][:, head * size:(head + 1) * size] = True
            groups[f"{prefix or 'attention'}.head{head}"] = mask
    if not groups:
        raise LLCInputError("the model has no nn.MultiheadAttention layer with a fused projection: "
                            "choose groups by layer or by name patterns instead")
    return groups


def flat_mask(flat: FlatParams, mask: ParameterMask) -> Tensor:
    """A ParameterMask as one (d,) float vector in FlatParams order (1 where the parameter moves)."""
    missing = [name for name in flat.names if name not in mask]
    if missing:
        raise LLCInputError(f"the parameter selection does not cover {missing[:5]}")
    return torch.cat([mask[name].reshape(-1) for name in flat.names]).float()


def moving_count(mask: ParameterMask) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def data_rows(inputs: Tensor, targets: Tensor, spec: Mapping[str, Any]) -> tuple[Tensor, str]:
    """The rows a data refinement keeps, and a description of them.

    spec is one of {"indices": [...]}, {"label": v} (targets equal to v: one class), {"tokens": [ids]}
    (sequences whose inputs contain any of these token ids) or {"column": j, "value": v} (inputs whose
    column j equals v).
    """
    if not isinstance(spec, Mapping) or len(spec) not in (1, 2):
        raise LLCInputError(f"refine.data = {spec!r} must be one of {{\"indices\": [...]}}, {{\"label\": 3}}, "
                            "{\"tokens\": [5, 7]} or {\"column\": 0, \"value\": 1.0}")
    n = inputs.shape[0]
    if "indices" in spec:
        index = torch.as_tensor(spec["indices"], dtype=torch.long).reshape(-1)
        if not len(index) or int(index.min()) < -n or int(index.max()) >= n:
            raise LLCInputError(f"refine.data.indices must lie in [0, {n}) and not be empty")
        keep, what = torch.zeros(n, dtype=torch.bool), f"{len(index)} chosen rows"
        keep[index] = True
    elif "label" in spec:
        keep, what = (targets.reshape(n, -1) == spec["label"]).all(1), f"rows with label {spec['label']!r}"
    elif "tokens" in spec:
        ids = torch.as_tensor(spec["tokens"], dtype=inputs.dtype).reshape(-1)
        keep, what = torch.isin(inputs.reshape(n, -1), ids).any(1), f"sequences containing tokens {spec['tokens']!r}"
    elif "column" in spec and "value" in spec:
        keep, what = inputs.reshape(n, -1)[:, int(spec["column"])] == spec["value"], f"rows with column {spec['column']} = {spec['value']!r}"
    else:
        raise LLCInputError(f"refine.data = {dict(spec)!r}: use indices, label, tokens, or column with value")
    rows = torch.nonzero(keep).flatten()
    if len(rows) < 2:
        raise LLCInputError(f"refine.data keeps {len(rows)} of {n} rows ({what}): a refined LLC needs at least 2")
    return rows, f"{what}: {len(rows)} of {n} rows"
