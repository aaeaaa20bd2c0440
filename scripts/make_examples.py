"""Write the example checkpoints and datasets of the Checkpoint and Trajectory pages to assets/examples/.

Run from the repository root: `.venv/bin/python scripts/make_examples.py`. Every file is small
(under 1 MB in all) and seeded, so the output is the same from run to run (up to the torch
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
                     f"{float(deep_linear_network([4, 3, 2], 2).llc):g} (docs/METHOD.md §4)"}


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


class TinyCausalTransformer(nn.Module):
    """Token and position embeddings, one causal nn.TransformerEncoderLayer, a linear head:
    logits (batch, T, vocabulary) for the next token at every position."""

    def __init__(self, vocabulary: int = 8, length: int = 8, width: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        self.layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, vocabulary)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens):
        length = tokens.shape[1]
        hidden = self.embed(tokens) + self.position[:length]
        return self.head(self.layer(hidden, src_mask=self.mask[:length, :length], is_causal=True))


def counting_sequences(n: int, length: int, vocabulary: int, generator: torch.Generator) -> torch.Tensor:
    """Each sequence counts up from a random start by a stride of 1 or 2 (mod the vocabulary): the next
    token follows from the last one once the stride has been seen, an in-context task."""
    start = torch.randint(0, vocabulary, (n, 1), generator=generator)
    stride = torch.randint(1, 3, (n, 1), generator=generator)
    return (start + stride * torch.arange(length + 1)) % vocabulary


def tiny_transformer() -> dict:
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(3)
    tokens = counting_sequences(1000, 8, 8, generator)
    model = TinyCausalTransformer()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(400):
        optimizer.zero_grad()
        logits = model(tokens[:, :-1])
        nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:]).backward()
        optimizer.step()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)  # export the plain operators, not the fused fast path
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(model(tokens[:, :-1]).transpose(1, 2), tokens[:, 1:]))
    program = torch.export.export(model, (tokens[:4, :-1],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, OUT / "tiny_transformer.pt2")
    np.savez(OUT / "counting_tokens.npz", tokens=tokens.numpy())
    params = sum(p.numel() for p in model.parameters())
    return {"name": "Tiny transformer, next-token prediction (.pt2 + token npz)", "checkpoint": "tiny_transformer.pt2",
            "data": "counting_tokens.npz", "loss": "next_token",
            "about": f"one causal attention layer, {params:,} parameters, trained on sequences that count up "
                     f"by 1 or 2 (mod 8); next-token loss {loss:.3f} nats"}


TRANSFORMER_CHECKPOINTS = (0, 10, 20, 30, 50, 100, 400)  # the loss falls from 2.16 to its 0.087 floor by step ~100


def transformer_training() -> dict:
    """The tiny transformer's training run (the seeds, data and steps of `tiny_transformer`), with checkpoints
    kept at TRANSFORMER_CHECKPOINTS: the last as a torch.export program, the zip's first member, which brings
    the architecture; the others as safetensors state dicts under the same parameter names."""
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(3)
    tokens = counting_sequences(1000, 8, 8, generator)
    model = TinyCausalTransformer()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    kept = {}
    for step in range(TRANSFORMER_CHECKPOINTS[-1] + 1):
        if step in TRANSFORMER_CHECKPOINTS:
            kept[step] = {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}
        if step == TRANSFORMER_CHECKPOINTS[-1]:
            break
        optimizer.zero_grad()
        logits = model(tokens[:, :-1])
        nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:]).backward()
        optimizer.step()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    program = io.BytesIO()
    torch.export.save(torch.export.export(model, (tokens[:4, :-1],), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      program)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        last = TRANSFORMER_CHECKPOINTS[-1]
        archive.writestr(f"transformer_step_{last:05d}.pt2", program.getvalue())
        for step in TRANSFORMER_CHECKPOINTS[:-1]:
            archive.writestr(f"transformer_step_{step:05d}.safetensors", save(kept[step]))
    (OUT / "transformer_training.zip").write_bytes(buffer.getvalue())
    return {"name": "Tiny transformer training run, two attention heads (zip of checkpoints + token npz)",
            "checkpoints": "transformer_training.zip", "data": "counting_tokens.npz", "loss": "next_token",
            "about": f"the Checkpoint page's tiny transformer, {len(TRANSFORMER_CHECKPOINTS)} checkpoints over its "
                     f"{TRANSFORMER_CHECKPOINTS[-1]} Adam steps (the loss reaches its floor by step ~100); track "
                     "\"each attention head\" to see when each head takes on complexity"}


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(16 * 2 * 2, classes))

    def forward(self, images):
        return self.net(images)


def small_cnn() -> dict:
    """A ~1.9k-parameter CNN on 8×8 'digits': ten blurred stroke prototypes, shifted and noisy."""
    torch.manual_seed(4)
    generator = torch.Generator().manual_seed(4)
    prototypes = torch.nn.functional.avg_pool2d(torch.rand(10, 1, 12, 12, generator=generator).round(), 3, 1)
    labels = torch.randint(0, 10, (1000,), generator=generator)
    shifts = torch.randint(0, 3, (1000, 2), generator=generator)
    images = torch.stack([prototypes[c, :, i:i + 8, j:j + 8] for c, (i, j) in zip(labels.tolist(), shifts.tolist())])
    images = images + 0.15 * torch.randn(images.shape, generator=generator)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    program = torch.export.export(model, (images[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, OUT / "small_cnn.pt2")
    save_file({"images": images.contiguous(), "labels": labels.contiguous()}, OUT / "digits_8x8.safetensors")
    params = sum(p.numel() for p in model.parameters())
    return {"name": "Small CNN on 8×8 digits (.pt2 + safetensors)", "checkpoint": "small_cnn.pt2",
            "data": "digits_8x8.safetensors", "loss": "cross_entropy",
            "about": f"conv–pool–conv–pool–linear, {params:,} parameters, {accuracy:.0%} training accuracy on "
                     "10 noisy shifted prototypes"}


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
    examples = [mlp_regression(), dln_csv(), classifier_export(), small_cnn(), tiny_transformer()]
    manifest = {"single": examples, "trajectory": [dln_training(), transformer_training()]}
    (OUT / "examples.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT.relative_to(ROOT)}, {total / 1024:.0f} KiB in all")


if __name__ == "__main__":
    main()
