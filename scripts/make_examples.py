"""Write the example checkpoints and datasets of the Checkpoint and Trajectory pages to assets/examples/.

Run from the repository root: `.venv/bin/python scripts/make_examples.py`. Every file is small
(well under 1 MB in all) and seeded, so the output is the same from run to run (up to the torch
version's serialisation). `examples.json` lists them for the pages' "Load example" buttons.

Each model's w* is the point that generated its labels, so it is a minimum of the loss: the
estimate is meaningful.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save, save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llc_core.truth.theory import deep_linear_network  # noqa: E402
from llc_core.studies.trajectory import TrainingConfig, train_model  # noqa: E402

OUT = ROOT / "assets" / "examples"


class TwoLayer(nn.Module):
    """Names its layers fc1, fc2, as many training scripts do (tests the name inference)."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def mlp_regression() -> dict:
    torch.manual_seed(0)
    model = TwoLayer(3, 8, 1)
    x = torch.randn(500, 3)
    with torch.no_grad():
        y = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, OUT / "mlp_regression.safetensors")
    np.savez(OUT / "mlp_regression.npz", x=x.numpy(), y=y.numpy())
    return {"name": "ReLU MLP regression (safetensors + npz)", "checkpoint": "mlp_regression.safetensors",
            "data": "mlp_regression.npz", "loss": "gaussian", "activation": "relu",
            "about": "3 → 8 → 1 ReLU network with biases (layers fc1, fc2); noise-free labels of the same network"}


def dln_csv() -> dict:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    x = torch.rand(300, 4) * 2 - 1
    with torch.no_grad():
        y = model(x)
    torch.save(model.state_dict(), OUT / "dln.pt")
    columns = ["x1", "x2", "x3", "x4", "y1", "y2"]
    rows = torch.cat([x, y], 1).numpy()
    lines = [",".join(columns)] + [",".join(f"{v:.6g}" for v in row) for row in rows]
    (OUT / "dln.csv").write_text("\n".join(lines) + "\n")
    return {"name": "Deep linear network 4 → 3 → 2 (torch .pt + CSV)", "checkpoint": "dln.pt", "data": "dln.csv",
            "loss": "gaussian", "activation": "identity", "target_columns": ["y1", "y2"],
            "about": f"no biases, no activation; full rank, so the true λ is "
                     f"{float(deep_linear_network([4, 3, 2], 2).llc):g} (REFERENCE §4)"}


def classifier_export() -> dict:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(500, 2)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1)
    y = torch.multinomial(probabilities, 1, generator=torch.Generator().manual_seed(2)).squeeze(1)
    program = torch.export.export(model, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, OUT / "classifier.pt2")
    save_file({"inputs": x.contiguous(), "labels": y.contiguous()}, OUT / "classifier_data.safetensors")
    return {"name": "Tanh classifier as a torch.export program (.pt2 + safetensors)", "checkpoint": "classifier.pt2",
            "data": "classifier_data.safetensors", "loss": "cross_entropy",
            "about": "2 → 8 → 3, tanh, labels drawn from its own softmax"}


def dln_training() -> dict:
    module, checkpoints, dataset, info = train_model(TrainingConfig(task="dln", checkpoints=11))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for point in checkpoints:
            body = save({k: v.contiguous() for k, v in point.weights.items()})
            archive.writestr(f"dln_step_{point.step:05d}.safetensors", body)
    (OUT / "dln_training.zip").write_bytes(buffer.getvalue())
    np.savez(OUT / "dln_training.npz", x=dataset.inputs.numpy(), y=dataset.targets.numpy())
    return {"name": "DLN training run, saddle to saddle (zip of checkpoints + npz)", "checkpoints": "dln_training.zip",
            "data": "dln_training.npz", "loss": "gaussian", "activation": "identity",
            "about": f"widths {info['widths']}, small initialisation; {len(checkpoints)} checkpoints over "
                     f"{info['steps']} steps of gradient descent"}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    examples = [mlp_regression(), dln_csv(), classifier_export()]
    manifest = {"single": examples, "trajectory": [dln_training()]}
    (OUT / "examples.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT.relative_to(ROOT)}, {total / 1024:.0f} KiB in all")


if __name__ == "__main__":
    main()
