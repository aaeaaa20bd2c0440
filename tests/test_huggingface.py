"""Hugging Face model folders and zips: tiny GPT-2, Llama and BERT models made here (nothing is
downloaded), loaded back as modules whose parameters are w*, and every bad input refused."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from llc_core import DataConfig, LLCInputError, ModelConfig, RunConfig, SamplerConfig, estimate_llc, run
from llc_core.files import checkpoint as ckpt
from llc_core.files import safe_read

VOCAB = 50
TINY = SamplerConfig(step_size=1e-5, chains=2, steps=30)


def tiny_model(kind: str):
    """A seeded tiny model of each supported family, with eager attention as the loader builds it
    (the same operators, so the logits must agree exactly)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=16,
                                         bos_token_id=0, eos_token_id=0, attn_implementation="eager")
        return transformers.GPT2LMHeadModel(config).eval()
    if kind == "llama":
        config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                          intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=16,
                                          attn_implementation="eager")
        return transformers.LlamaForCausalLM(config).eval()
    if kind in ("mistral", "qwen2"):  # Llama-style decoders on the allow-list
        config_class, model_class = {"mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
                                     "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
        config = config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                              intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=16, attn_implementation="eager")
        return model_class(config).eval()
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=VOCAB, max_position_embeddings=16, attn_implementation="eager")
    return transformers.BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """kind -> (original model, its save_pretrained folder)."""
    models = {}
    for kind in ("gpt2", "llama", "bert", "mistral", "qwen2"):
        model = tiny_model(kind)
        folder = tmp_path_factory.mktemp(kind)
        model.save_pretrained(folder, safe_serialization=True)
        models[kind] = (model, folder)
    return models


def zip_folder(folder: Path, prefix: str = "", extra: dict[str, bytes] | None = None, skip: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.name not in skip:
                archive.write(path, prefix + path.name)
        for name, body in (extra or {}).items():
            archive.writestr(name, body)
    return buffer.getvalue()


def copy_folder(source: Path, target: Path, config_changes: dict | None = None, skip: tuple[str, ...] = ()) -> Path:
    target.mkdir()
    for path in source.iterdir():
        if path.name not in skip:
            (target / path.name).write_bytes(path.read_bytes())
    if config_changes is not None:
        config = json.loads((source / "config.json").read_text())
        config.update(config_changes)
        (target / "config.json").write_text(json.dumps(config))
    return target


def token_batch(rows: int = 16, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


# ====================================================================== loading


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "mistral", "qwen2"])
def test_folder_and_zip_give_the_original_logits(saved, kind):
    model, folder = saved[kind]
    x = token_batch(3, 10)
    with torch.no_grad():
        expected = model(input_ids=x).logits
    from_folder = ckpt.load_checkpoint(folder)
    from_zip = ckpt.load_checkpoint(zip_folder(folder, prefix=f"{kind}/"))  # zipped with its folder, as people do
    assert from_folder.format == from_zip.format == "huggingface"
    for loaded in (from_folder, from_zip):
        module, spec = ckpt.model_from_checkpoint(loaded)
        assert spec is None and not module.training
        with torch.no_grad():
            logits = module(x)
        assert logits.shape == (3, 10, VOCAB) and logits.dtype == torch.float32
        assert torch.equal(logits, expected)
    assert list(from_folder.state_dict) == [name for name, _ in from_folder.module.named_parameters()]
    assert from_folder.notes[0].startswith(type(model).__name__)


def test_tied_weights_are_one_parameter_and_functional_call_follows_the_tie(saved):
    model, folder = saved["gpt2"]
    module = ckpt.load_checkpoint(folder).module
    params = dict(module.named_parameters())
    assert "model.lm_head.weight" not in params and "model.transformer.wte.weight" in params
    assert module.model.lm_head.weight is module.model.transformer.wte.weight
    x = token_batch(2, 8)
    shifted = {k: v.detach() + 0.01 * torch.randn_like(v) for k, v in params.items()}
    by_call = torch.func.functional_call(module, shifted, (x,))
    with torch.no_grad():  # the same weights written in: the tied lm_head moves with wte
        for name, param in module.named_parameters():
            param.copy_(shifted[name])
        assert torch.allclose(by_call, module(x), atol=1e-6)
    stacked = {k: torch.stack([v, v]) for k, v in shifted.items()}  # two chains, as the engine batches them
    batched = torch.vmap(lambda p: torch.func.functional_call(module, p, (x,)))(stacked)
    assert batched.shape == (2, 2, 8, VOCAB) and torch.allclose(batched[1], by_call, atol=1e-5)


def test_a_file_that_stores_the_tied_copy_loads_and_a_differing_copy_is_refused(saved, tmp_path):
    model, folder = saved["gpt2"]
    state = load_file(folder / "model.safetensors")
    with_copy = copy_folder(folder, tmp_path / "with_copy")
    save_file({**state, "lm_head.weight": state["transformer.wte.weight"].clone()}, with_copy / "model.safetensors")
    assert torch.equal(ckpt.load_checkpoint(with_copy).module(token_batch(2, 5)), model(input_ids=token_batch(2, 5)).logits)
    differing = copy_folder(folder, tmp_path / "differing")
    save_file({**state, "lm_head.weight": state["transformer.wte.weight"] + 1}, differing / "model.safetensors")
    with pytest.raises(LLCInputError, match=r"lm_head.weight and transformer.wte.weight differ .*tie_word_embeddings"):
        ckpt.load_checkpoint(differing)


def test_sharded_weights_load_and_a_lost_shard_is_named(saved, tmp_path):
    model, _ = saved["llama"]
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="40KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").exists()
    x = token_batch(2, 6)
    assert torch.equal(ckpt.load_checkpoint(zip_folder(folder)).module(x), model(input_ids=x).logits)
    (folder / shards[-1]).unlink()
    with pytest.raises(LLCInputError, match=f"weight shard\\(s\\) {shards[-1]} listed in model.safetensors.index.json are missing"):
        ckpt.load_checkpoint(folder)


def test_older_hub_layouts_load_as_from_pretrained_reads_them(saved, tmp_path):
    # the original gpt2 file: names without "transformer.", the causal mask stored as a buffer
    model, folder = saved["gpt2"]
    state = load_file(folder / "model.safetensors")
    legacy = copy_folder(folder, tmp_path / "gpt2")
    save_file({**{k.removeprefix("transformer."): v for k, v in state.items()},
               "h.0.attn.bias": torch.tril(torch.ones(1, 1, 16, 16))}, legacy / "model.safetensors")
    loaded = ckpt.load_checkpoint(legacy)
    x = token_batch(2, 7)
    assert torch.equal(loaded.module(x), model(input_ids=x).logits)
    assert any("without the 'transformer.' prefix" in note for note in loaded.notes)
    # the original bert-base-uncased: LayerNorm gamma/beta, and the pooler and next-sentence head
    model, folder = saved["bert"]
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in load_file(folder / "model.safetensors").items()}
    legacy = copy_folder(folder, tmp_path / "bert")
    save_file({**renamed, "bert.pooler.dense.weight": torch.zeros(32, 32), "cls.seq_relationship.weight": torch.zeros(2, 32)},
              legacy / "model.safetensors")
    loaded = ckpt.load_checkpoint(legacy)
    assert torch.equal(loaded.module(x), model(input_ids=x).logits)
    assert any("not used: [bert.pooler.dense.weight, cls.seq_relationship.weight]" in note for note in loaded.notes)


def test_pytorch_model_bin_is_read_weights_only_and_a_pickle_payload_is_refused(saved, tmp_path):
    model, folder = saved["llama"]
    state = load_file(folder / "model.safetensors")
    bin_folder = copy_folder(folder, tmp_path / "bin", skip=("model.safetensors",))
    torch.save(state, bin_folder / "pytorch_model.bin")
    loaded = ckpt.load_checkpoint(bin_folder)
    assert any("weights_only=True" in note for note in loaded.notes)
    x = token_batch(2, 6)
    assert torch.equal(loaded.module(x), model(input_ids=x).logits)
    victim = tmp_path / "pwned.txt"

    class WritesAFile:
        def __reduce__(self):
            return (open, (str(victim), "w"))

    torch.save({**state, "payload": WritesAFile()}, bin_folder / "pytorch_model.bin")
    with pytest.raises(LLCInputError, match=r"refused to load the pytorch_model.bin: .*open"):
        ckpt.load_checkpoint(bin_folder)
    assert not victim.exists()


# ====================================================================== refused


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "gptj", "architectures": ["GPTJForCausalLM"]}, r"model_type 'gptj': supported .*GPT2LMHeadModel .*\.pt2"),
    ({"architectures": ["GPT2ForSequenceClassification"]}, r"architectures \['GPT2ForSequenceClassification'\] are not supported"),
    ({"auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilModel"}}, r"refused config.json: it has auto_map.*nothing was run.*torch.export"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization_config"),
    ({"n_layer": 3}, "config.json says 3 layers but the weights hold 2"),
    ({"n_embd": 1024}, r"do not fit .*shape mismatch .*transformer.wte.weight: file \(50, 32\) vs model \(50, 1024\)"),
    ({"n_head": 5}, "cannot build a GPT2LMHeadModel"),
    ({"transformers_version": "99.0.0"}, r"saved by transformers 99.0.0, newer than the installed .*pip install -U"),
])
def test_configs_outside_the_allow_list_or_not_matching_the_weights_are_refused(saved, tmp_path, changes, message):
    folder = copy_folder(saved["gpt2"][1], tmp_path / "model", config_changes=changes)
    with pytest.raises(LLCInputError, match=message):
        ckpt.load_checkpoint(folder)


def test_missing_files_corrupt_config_and_traversal_are_refused(saved, tmp_path):
    folder = saved["gpt2"][1]
    no_weights = copy_folder(folder, tmp_path / "no_weights", skip=("model.safetensors",))
    with pytest.raises(LLCInputError, match=r"config.json but no weights .*save_pretrained\(folder, safe_serialization=True\)"):
        ckpt.load_checkpoint(no_weights)
    with pytest.raises(LLCInputError, match=r"config.json but no weights"):
        ckpt.load_checkpoint(zip_folder(folder, skip=("model.safetensors",)))
    with pytest.raises(LLCInputError, match="has no config.json"):
        ckpt.load_checkpoint(copy_folder(folder, tmp_path / "no_config", skip=("config.json",)))
    bad_json = copy_folder(folder, tmp_path / "bad_json")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(LLCInputError, match="config.json is not valid JSON"):
        ckpt.load_checkpoint(bad_json)
    with pytest.raises(LLCInputError, match=r"'\.\./evil.txt' has an absolute or '\.\.' path"):
        ckpt.load_checkpoint(zip_folder(folder, extra={"../evil.txt": b"x"}))
    with pytest.raises(LLCInputError, match="2 config.json files"):
        ckpt.load_checkpoint(zip_folder(folder, extra={"other/config.json": b"{}", "other/model.safetensors": b""}))
    renamed = copy_folder(folder, tmp_path / "png_weights")
    (renamed / "model.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(LLCInputError, match="model.safetensors is a PNG image, not a safetensors file"):
        ckpt.load_checkpoint(renamed)


def test_size_limits_hold_for_folders_and_zips(saved, monkeypatch):
    folder = saved["gpt2"][1]
    data = zip_folder(folder)
    monkeypatch.setattr(safe_read, "MAX_FILE_BYTES", 20_000)  # the weights are about 110 kB
    with pytest.raises(LLCInputError, match="over the"):
        ckpt.load_checkpoint(folder)
    monkeypatch.setattr(safe_read, "MAX_FILE_BYTES", len(data) + 1)  # the zip fits, what it unpacks to does not
    with pytest.raises(LLCInputError, match="unpacked"):
        ckpt.load_checkpoint(data)
    monkeypatch.setattr(safe_read, "MAX_ZIP_MEMBERS", 3)
    monkeypatch.setattr(safe_read, "MAX_FILE_BYTES", 256 * 2**20)
    with pytest.raises(LLCInputError, match="over the limit of 3"):
        ckpt.load_checkpoint(zip_folder(folder, extra={f"vocab{i}.txt": b"a" for i in range(3)}))


def test_missing_transformers_names_the_install(tmp_path, monkeypatch):
    # a hand-written config and weights: this test needs no transformers to make its files
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                      "n_layer": 1}))
    save_file({"transformer.h.0.ln_1.weight": torch.ones(4)}, tmp_path / "model.safetensors")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(LLCInputError, match=r"needs the transformers library.*pip install -r requirements-hf.txt"):
        ckpt.load_checkpoint(tmp_path)


def test_zip_kinds_stay_apart(saved):
    assert safe_read.file_kind(zip_folder(saved["gpt2"][1])) == "huggingface"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a training run's settings beside its checkpoints
        archive.writestr("config.json", "{}")
        archive.writestr("ckpt_100.pt", b"x")
    assert safe_read.file_kind(buffer.getvalue()) == "zip"


# ====================================================================== estimating


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_estimate_llc_runs_on_a_language_model(saved, kind):
    module = ckpt.load_checkpoint(saved[kind][1]).module
    tokens = token_batch(16, 9)
    result = estimate_llc(module, tokens[:, :-1], tokens[:, 1:], TINY, loss="next_token")
    assert math.isfinite(result.llc_mean) and result.num_params == sum(p.numel() for p in module.parameters())
    assert result.init_loss == pytest.approx(math.log(VOCAB), rel=0.05)  # an untrained model: about uniform


def test_a_run_config_with_a_model_folder_and_a_tokens_file(saved, tmp_path):
    folder = saved["gpt2"][1]
    np.savez(tmp_path / "tokens.npz", tokens=token_batch(24, 9).numpy())
    config = RunConfig(model=ModelConfig(kind="checkpoint", path=str(folder)),
                       data=DataConfig(path=str(tmp_path / "tokens.npz")), sampler=TINY)
    result = run(config)
    assert result.n == 24 and math.isfinite(result.llc_mean)
    zipped = tmp_path / "model.zip"
    zipped.write_bytes(zip_folder(folder))
    np.savez(tmp_path / "out_of_vocab.npz", tokens=token_batch(24, 9).numpy() + VOCAB)
    with pytest.raises(LLCInputError, match=r"token ids must lie in \[0, 49\]"):
        run(RunConfig(model=ModelConfig(kind="checkpoint", path=str(zipped)),
                      data=DataConfig(path=str(tmp_path / "out_of_vocab.npz")), sampler=TINY))
    np.savez(tmp_path / "too_long.npz", tokens=token_batch(24, 20).numpy())
    with pytest.raises(LLCInputError, match="longer than the model's 16 positions"):
        run(RunConfig(model=ModelConfig(kind="checkpoint", path=str(folder)),
                      data=DataConfig(path=str(tmp_path / "too_long.npz")), sampler=TINY))
    np.savez(tmp_path / "floats.npz", x=np.zeros((4, 3)), y=np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(LLCInputError, match="takes integer token ids"):
        run(RunConfig(model=ModelConfig(kind="checkpoint", path=str(folder)),
                      data=DataConfig(path=str(tmp_path / "floats.npz"), loss="next_token"), sampler=TINY))
    with pytest.raises(LLCInputError, match="brings its own architecture"):
        run(RunConfig(model=ModelConfig(kind="checkpoint", path=str(folder), activation="relu"),
                      data=DataConfig(path=str(tmp_path / "tokens.npz")), sampler=TINY))


def test_nothing_imports_transformers_at_import_time():
    code = ("import sys, llc_core, llc_core.files.checkpoint, llc_core.files.huggingface, llc_core.runner; "
            "print('transformers' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."})
    assert out.stdout.strip() == "False"
