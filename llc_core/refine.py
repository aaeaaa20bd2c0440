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
    """One group per attention head of every fused-projection attention (`attention_layers`): the head's
    rows of the fused query/key/value projection (weight and bias) and its columns of the output
    projection. The output bias is shared by all heads, so it belongs to none."""
    shapes = parameter_shapes(model)
    groups = {}
    for prefix, (width, heads) in attention_layers(model).items():
        size = width // heads
        name = f"{prefix}.in_proj_weight" if prefix else "in_proj_weight"
        for head in range(heads):
            mask = {key: torch.zeros(shape, dtype=torch.bool) for key, shape in shapes.items()}
            rows = torch.cat([torch.arange(part * width + head * size, part * width + (head + 1) * size)
                              for part in range(3)])
            mask[name][rows] = True
            bias = name.replace("in_proj_weight", "in_proj_bias")
            if bias in mask:
                mask[bias][rows] = True
            mask[name.replace("in_proj_weight", "out_proj.weight")][:, head * size:(head + 1) * size] = True
            groups[f"{prefix or 'attention'}.head{head}"] = mask
    if not groups:
        raise LLCInputError("the model has no nn.MultiheadAttention layer with a fused projection: "
                            "choose groups by layer or by name patterns instead")
    return groups


MULTIHEAD_ATTENTION = "MultiheadAttention"  # the class name a torch.export graph records for such a module


def attention_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Every attention with a fused q/k/v projection, {module path: (embed_dim, num_heads)}, in model order.

    An nn.MultiheadAttention module says it itself. A torch.export program (a .pt2 upload) has lost its
    modules: there an attention is a path that the graph records as a MultiheadAttention (each node's
    `nn_module_stack`) and whose parameters are `<path>.in_proj_weight` (3E × E) and `<path>.out_proj.weight`
    (E × E); its head count is read off the attention the graph computes there (`traced_heads`)."""
    found: dict[str, tuple[int, int]] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found[prefix] = (module.embed_dim, module.num_heads)
    shapes = parameter_shapes(model)
    for prefix, heads in traced_heads(model, shapes).items():
        name = f"{prefix}.in_proj_weight" if prefix else "in_proj_weight"
        out = name.replace("in_proj_weight", "out_proj.weight")
        fused, projection = shapes.get(name), shapes.get(out)
        if prefix in found or fused is None or projection is None or len(fused) != 2:
            continue
        width = fused[1]
        if fused == (3 * width, width) and projection == (width, width) and heads >= 1 and width % heads == 0:
            found[prefix] = (width, heads)
    return found


def traced_heads(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """{path of a MultiheadAttention recorded in a torch.fx graph: its number of heads}, read off the query
    that its scaled_dot_product_attention takes, (batch, heads, T, head_dim) or (batch·heads, T, head_dim),
    or else off the query of its first batched product q·kᵀ (bmm or baddbmm, (batch·heads, T, head_dim))."""
    found: dict[str, int] = {}
    for graph_module in model.modules():
        graph = getattr(graph_module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            path = attention_path(node)
            if path is None or path in found or node.op != "call_function":
                continue
            target = str(node.target)
            if "scaled_dot_product" in target:
                query = node.args[0] if node.args else None
            elif "bmm" in target:  # aten.bmm(q, kᵀ) or aten.baddbmm(mask, q, kᵀ)
                query = node.args[1 if "baddbmm" in target else 0] if node.args else None
            else:
                continue
            shape = getattr(getattr(query, "meta", {}).get("val"), "shape", None)
            fused = shapes.get(f"{path}.in_proj_weight" if path else "in_proj_weight")
            if shape is None or fused is None or len(fused) != 2 or len(shape) not in (3, 4):
                continue
            try:
                heads = int(shape[-3]) if len(shape) == 4 else fused[1] // int(shape[-1])
            except Exception:  # noqa: BLE001 - a symbolic size (or none) is no head count
                continue
            found[path] = heads
    return found


def attention_path(node: Any) -> str | None:
    """The path of the innermost MultiheadAttention that a torch.fx node was traced in, or None."""
    stack = getattr(node, "meta", {}).get("nn_module_stack") or {}
    paths = [entry[0] for entry in stack.values() if isinstance(entry, tuple) and len(entry) == 2
             and str(getattr(entry[1], "__name__", entry[1])).endswith(MULTIHEAD_ATTENTION)]
    return paths[-1] if paths else None


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

    spec is one of {"indices": [...]}, {"range": [start, stop]} (rows start … stop − 1), {"label": v}
    (targets equal to v: one class), {"tokens": [ids]} (sequences whose inputs contain any of these token
    ids) or {"column": j, "value": v} (inputs whose column j equals v).
    """
    if not isinstance(spec, Mapping) or len(spec) not in (1, 2):
        raise LLCInputError(f"refine.data = {_short(spec)} must be one of {{\"indices\": [...]}}, "
                            "{\"range\": [0, 100]}, {\"label\": 3}, {\"tokens\": [5, 7]} or {\"column\": 0, \"value\": 1.0}")
    n = inputs.shape[0]
    try:
        keep, what = _kept(inputs, targets, spec, n)
    except LLCInputError:
        raise
    except (TypeError, ValueError, IndexError, RuntimeError, OverflowError) as err:
        raise LLCInputError(f"refine.data = {_short(spec)} cannot select rows ({type(err).__name__}: "
                            f"{_short(str(err))}): see the forms it takes in RefineConfig") from None
    rows = torch.nonzero(keep).flatten()
    if len(rows) < 2:
        raise LLCInputError(f"refine.data keeps {len(rows)} of {n} rows ({what}): a refined LLC needs at least 2")
    return rows, f"{what}: {len(rows)} of {n} rows"


def _kept(inputs: Tensor, targets: Tensor, spec: Mapping[str, Any], n: int) -> tuple[Tensor, str]:
    """data_rows' boolean row mask and its description, by the spec's form."""
    if "indices" in spec:
        index = torch.as_tensor(spec["indices"], dtype=torch.long).reshape(-1)
        if not len(index) or int(index.min()) < -n or int(index.max()) >= n:
            raise LLCInputError(f"refine.data.indices must lie in [0, {n}) and not be empty")
        keep, what = torch.zeros(n, dtype=torch.bool), f"{len(index)} chosen rows"
        keep[index] = True
        return keep, what
    if "range" in spec:
        bounds = spec["range"]
        if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                or not 0 <= bounds[0] < bounds[1] <= n):
            raise LLCInputError(f"refine.data.range = {_short(bounds)} must be [start, stop], whole numbers with "
                                f"0 ≤ start < stop ≤ {n} (rows start … stop − 1)")
        keep = torch.zeros(n, dtype=torch.bool)
        keep[bounds[0]:bounds[1]] = True
        return keep, f"rows {bounds[0]}–{bounds[1] - 1}"
    if "label" in spec:
        _check_number("label", spec["label"])
        return (targets.reshape(n, -1) == spec["label"]).all(1), f"rows with label {spec['label']!r}"
    if "tokens" in spec:
        ids = torch.as_tensor(spec["tokens"], dtype=inputs.dtype).reshape(-1)
        return torch.isin(inputs.reshape(n, -1), ids).any(1), f"sequences containing tokens {spec['tokens']!r}"
    if "column" in spec and "value" in spec:
        column, width = spec["column"], inputs.reshape(n, -1).shape[1]
        if not isinstance(column, int) or isinstance(column, bool) or not 0 <= column < width:
            raise LLCInputError(f"refine.data.column = {_short(column)} must be a whole number in [0, {width})")
        _check_number("value", spec["value"])
        return inputs.reshape(n, -1)[:, column] == spec["value"], f"rows with column {column} = {spec['value']!r}"
    raise LLCInputError(f"refine.data = {_short(dict(spec))}: use indices, range, label, tokens, or column with value")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LLCInputError(f"refine.data.{name} = {_short(value)} must be a number")


def _short(value: Any, most: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= most else text[:most - 1] + "…"


MAX_LABEL_SUBSETS = 32  # one data-refined LLC per class label: more classes than this, and the user chooses


def label_subsets(targets: Tensor, most: int = MAX_LABEL_SUBSETS) -> dict[str, dict[str, Any]]:
    """One data subset per class label of the targets, {"label 0": {"label": 0}, ...} in label order, for
    targets that are one whole number per row (a classifier's); otherwise an LLCInputError saying why."""
    n = targets.shape[0]
    flat = targets.reshape(n, -1)
    if flat.shape[1] != 1:
        raise LLCInputError(f"per-label subsets need one class label per row, and these targets have "
                            f"{flat.shape[1]} values per row (a regression's outputs, or token sequences): "
                            "choose the subsets' rows instead")
    values = torch.unique(flat[:, 0])
    if values.is_floating_point() and not bool(torch.all(values == values.round())):
        raise LLCInputError("the targets are real numbers, not class labels: per-label subsets need a classifier's "
                            "labels; choose the subsets' rows instead")
    if len(values) < 2:
        raise LLCInputError("every row has the same label: one subset per label would be the whole data")
    if len(values) > most:
        raise LLCInputError(f"the targets hold {len(values)} different labels, more than {most} subsets: "
                            "choose the subsets' rows instead (e.g. a few labels, or row ranges)")
    return {f"label {int(v)}": {"label": int(v)} for v in values.tolist()}
