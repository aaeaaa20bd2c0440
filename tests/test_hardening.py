"""Issue 16: every malformed config exits 2 with one line, every run is bounded before it allocates
(llc_core/budget.py), a stop ends a run within about a second, Ctrl-C prints the partial result."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llc_core import LLCInputError, RunConfig, budget, defaults
from llc_core.cli import main
from llc_core.runner import check_config, run

ROOT = Path(__file__).resolve().parents[1]


def cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def assert_one_line_error(rc: int, err: str) -> str:
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


ISSUE_CONFIGS = {  # issue 16's repros, each with a word its message must contain
    '{"data": {"noise_scale": 0}}': "noise_scale",
    '{"model": {"kind": []}}': "model.kind",
    '{"sampler": {"seed": 1000000000000000000000000000000}}': "seed",
    '{"sampler": {"nbeta": 1e-300}}': "nbeta",
    '{"sampler": {"start_spread": 1e300}}': "start_spread",
    '{"device": ["cpu"]}': "device",
    '{"model": {"kind": "checkpoint", "path": 5}}': "model.path",
    '{"model": {"kind": "checkpoint", "path": "/dev/zero"}}': "not a regular file",
    '{"model": {"kind": "mlp", "input_dim": 4, "hidden": [10000000]}, "data": {"n": 200}}': "model's size",
    '{"model": {"kind": "dln", "widths": [100000, 100000]}}': "model's size",
    '{"model": {"kind": "potential", "powers": ' + json.dumps([1] * 100_000) + '}}': "powers",
    '{"sampler": {"chains": 1000000}}': "sampler.chains",
    '{"data": {"n": 10000000000}}': "data.n",
    '{"sampler": {"steps": 1000000000000}}': "sampler.steps",
    '{"model": {"kind": "dln", "layers": [1000000, 1000000], "width_range": [2, 3]}}': "layers",
    '{"model": {"kind": "dln", "widths": [3, 3], "train_steps": 1000000000000}}': "train_steps",
    "[" * 5000 + "]" * 5000: "nested too deeply",
}


@pytest.mark.parametrize("text", list(ISSUE_CONFIGS))
def test_every_malformed_config_of_the_issue_exits_2_with_one_line(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    started = time.perf_counter()
    line = assert_one_line_error(*cli(["run", "--quiet", str(path)]))
    assert ISSUE_CONFIGS[text] in line
    assert time.perf_counter() - started < 5  # refused before building anything


def test_other_subcommands_refuse_oversized_or_malformed_input(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert "steps" in assert_one_line_error(*cli(["validate", "smoke", "--sampler", '{"steps": 1e10}']))
    assert "loss trace" in assert_one_line_error(*cli(["validate", "smoke", "--sampler", '{"steps": 10000000000}']))
    assert "data.n" in assert_one_line_error(*cli(["compare", str(empty), "--sizes", "10000000000"]))
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"run": {"model": {"kind": []}}, "step_sizes": [0.001]}))
    assert "model.kind" in assert_one_line_error(*cli(["sweep", str(sweep)]))
    sweep.write_text(json.dumps({"run": {"model": {"kind": "dln", "widths": [30000, 30000]}}, "step_sizes": [1e-3]}))
    assert "budget" in assert_one_line_error(*cli(["sweep", str(sweep)]))


def test_the_budget_names_the_largest_part_and_is_configurable(monkeypatch):
    huge = RunConfig.from_dict({"sampler": {"chains": 3000, "steps": 1_000_000}})
    with pytest.raises(LLCInputError, match="loss trace.*lower sampler.steps or sampler.chains.*LLC_MAX_MEMORY_GB"):
        check_config(huge)
    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "64")
    check_config(huge)  # 11 GiB of trace: within a 64 GiB machine's budget
    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(LLCInputError, match="LLC_MAX_MEMORY_GB = 'lots'"):
        budget.memory_limit_bytes()


def test_the_budget_does_not_refuse_the_defaults():
    for kind in ({"kind": "potential"}, {"kind": "dln", "widths": [10, 10, 10]}, {"kind": "mlp"}, {"kind": "tanh"}):
        check_config(RunConfig.from_dict({"model": kind}))


def test_a_stop_ends_a_run_within_a_second_whatever_snapshot_every():
    config = RunConfig.from_dict({"model": {"kind": "potential", "powers": [1, 2]}, "data": {"n": 500},
                                  "sampler": {"steps": 10_000_000, "snapshot_every": 10_000_000, "chains": 2,
                                              "step_size": 1e-4, "burnin": 0.1}})
    stop = threading.Event()
    stopped_at = []
    timer = threading.Timer(2.0, lambda: (stopped_at.append(time.perf_counter()), stop.set()))
    timer.start()
    result = run(config, stop=stop)
    latency = time.perf_counter() - stopped_at[0]
    assert result.partial and 0 < result.steps_completed < 10_000_000
    assert latency < 1.0, latency


def test_the_stop_check_leaves_unstopped_runs_identical(monkeypatch):
    """The clock-based check reads no random numbers: checking on every step changes nothing."""
    config = RunConfig.from_dict({"model": {"kind": "potential"}, "data": {"n": 300},
                                  "sampler": {"steps": 300, "chains": 2, "step_size": 1e-3}})
    first = run(config, stop=threading.Event())
    monkeypatch.setattr(defaults, "STOP_CHECK_SECONDS", 0.0)
    second = run(config, stop=threading.Event())
    assert first.llc_mean == second.llc_mean and first.llc_per_chain == second.llc_per_chain


def test_ctrl_c_prints_the_partial_result(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"kind": "potential"}, "data": {"n": 500},
                                "sampler": {"steps": 10_000_000, "chains": 2, "step_size": 1e-4, "burnin": 0.01}}))
    proc = subprocess.Popen([sys.executable, "-m", "llc_core", "run", "--quiet", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # torch's import, then sampling
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["partial"] is True and 0 < result["steps_completed"] < 10_000_000


def run_fuzz(seed: int, count: int, timeout: float) -> list[dict]:
    def limit_memory() -> None:  # torch's import maps ~2 GiB; the budget below keeps runs far under the rest
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    env = {**os.environ, defaults.MEMORY_LIMIT_ENV: "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_cli.py"), str(seed), str(count), "20"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=limit_memory)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines and lines[-1] == {"done": count}, proc.stderr[-2000:]
    return lines[:-1]


def test_fuzzed_configs_exit_2_with_one_line():
    """300 malformed configs (seeded) under a 6 GiB address-space limit and a 1 GiB budget: every one is
    refused with one line, none raises, none hangs (20 s each)."""
    assert run_fuzz(seed=0, count=300, timeout=120) == []


@pytest.mark.slow
def test_fuzzed_configs_exit_2_with_one_line_long():
    assert run_fuzz(seed=1, count=3000, timeout=900) == []


def test_escape_markdown_leaves_no_link_image_or_html():
    from markdown_it import MarkdownIt

    from pages.common import escape_markdown

    hostile = "[Session expired, log in again](https://evil.example/login) ![x](http://127.0.0.1:9/t.png) <img src=x>"
    html = MarkdownIt("commonmark", {"html": True}).render(escape_markdown(hostile))
    assert "<a" not in html and "<img" not in html, html
    assert "Session expired, log in again" in html
    # Streamlit's Markdown (remark-gfm) also links bare https://…, www.… and a@b.c in plain text
    assert "://" not in html
    for literal in ("https://evil.example", "www.evil.example", "me@evil.example", "HTTP://x"):
        escaped = escape_markdown(literal)
        assert "://" not in escaped.replace("\\", "") and "www." not in escaped.replace("\\", "")
        assert escaped.replace("\\", "").replace("\u2060", "") == literal  # shows as typed


def test_upload_folders_are_removed_with_their_session_and_stale_ones_at_start(tmp_path, monkeypatch):
    import gc
    import tempfile

    from pages import common

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    holder = common._Folder(tempfile.mkdtemp(prefix=f"llc-checkpoint-{os.getpid()}-"))
    path = Path(holder.path)
    (path / "model.pt").write_bytes(b"x")
    del holder
    gc.collect()
    assert not path.exists()  # the session's state dropped: its folder with it
    dead = tmp_path / "llc-trajectory-999999999-abc"
    dead.mkdir()
    mine = tmp_path / f"llc-checkpoint-{os.getpid()}-abc"
    mine.mkdir()
    assert common.remove_stale_uploads() == 1
    assert not dead.exists() and mine.exists()


def test_data_beyond_float32_is_named_as_such_not_as_nan():
    import numpy as np
    import torch

    from llc_core import LLCInputError, SamplerConfig, estimate_llc
    from llc_core.files.datafiles import make_dataset

    x = np.ones((10, 2)) * 1e300
    with pytest.raises(LLCInputError, match="beyond float32's range"):
        make_dataset(x, np.ones((10, 1)), "gaussian")
    with pytest.raises(LLCInputError, match="beyond float32's range.*float64"):
        estimate_llc(torch.nn.Linear(2, 1), torch.tensor(x), torch.ones(10, 1), SamplerConfig(step_size=1e-4, steps=5))


def test_a_device_file_is_read_no_further_than_the_limit():
    from llc_core import LLCInputError
    from llc_core.files.safe_read import read_limited

    with pytest.raises(LLCInputError, match="over the 0.00391 MiB limit"):
        read_limited("/dev/zero", "data file", limit=4096)


def _stop_after(seconds: float) -> tuple[threading.Event, list[float]]:
    stop, stopped_at = threading.Event(), []
    timer = threading.Timer(seconds, lambda: (stopped_at.append(time.perf_counter()), stop.set()))
    timer.daemon = True
    timer.start()
    return stop, stopped_at


def test_a_stop_ends_sgd_pre_training_within_a_second_with_a_clear_error():
    """Issue 16's repro (/estimate?kind=dln&widths=5,4,3&rank=1&train_steps=...): a stop during SGD
    pre-training raises LLCInputError rather than estimating at a half-trained w*."""
    from llc_core.runner import build_problem

    config = RunConfig.from_dict({"model": {"kind": "dln", "widths": [5, 4, 3], "rank": 1,
                                            "train_steps": defaults.MAX_TRAIN_STEPS}})
    build_problem(dataclasses.replace(config.model, train_steps=None), config.data)  # lazy imports, warm-up
    stop, stopped_at = _stop_after(1.5)
    started = time.perf_counter()
    with pytest.raises(LLCInputError, match="stopped during SGD pre-training at step [1-9][0-9]* of 10000000"):
        run(config, stop=stop)
    assert time.perf_counter() - stopped_at[0] < 1.0 and time.perf_counter() - started < 2.5


def test_build_problem_takes_a_callable_stop_and_keeps_its_two_argument_form():
    from llc_core.config import DataConfig, ModelConfig
    from llc_core.runner import build_problem
    from llc_core.truth import zoo

    model, data = ModelConfig(kind="dln", widths=[4, 3, 4], rank=2, train_steps=50_000_000 // 10), DataConfig(n=300)
    started = time.perf_counter()
    with pytest.raises(LLCInputError, match="stopped during SGD pre-training"):
        zoo.build_problem(model, data, stop=lambda: time.perf_counter() - started > 0.5)
    assert time.perf_counter() - started < 2.0
    small = ModelConfig(kind="dln", widths=[4, 3, 4], rank=2, train_steps=30)
    plain, never = build_problem(small, data), build_problem(small, data, stop=threading.Event())
    assert all(bool((p == q).all()) for p, q in zip(plain.model.parameters(), never.model.parameters()))
    assert plain.info["train_loss"] == never.info["train_loss"]


def test_a_stop_ends_a_trajectory_training_within_a_second():
    from llc_core.studies.trajectory import TrainingConfig, train_model

    stop, stopped_at = _stop_after(0.5)
    started = time.perf_counter()
    module, checkpoints, _, _ = train_model(TrainingConfig(task="dln", steps=10_000_000, checkpoints=3), stop.is_set)
    assert time.perf_counter() - stopped_at[0] < 1.0 and time.perf_counter() - started < 2.0
    assert [c.step for c in checkpoints] == [0]  # stopped long before the middle checkpoint


def _torch_pickle_with_setstate() -> bytes:
    """A torch.save zip whose data.pkl BUILDs a Parameter with the state 1: torch's weights-only
    unpickler hands it to Parameter.__setstate__, which raises TypeError inside torch.load."""
    import zipfile
    from collections import OrderedDict

    import torch

    buffer = io.BytesIO()
    torch.save(OrderedDict(w=torch.zeros(2)), buffer)
    body = b"\x80\x02ctorch.nn.parameter\nParameter\n)RK\x01b."  # Parameter(); BUILD with state 1
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, body if info.filename.endswith("data.pkl") else src.read(info))
    return out.getvalue()


def _npz_claiming(shape: tuple[int, ...]) -> bytes:
    import zipfile

    header = ("{'descr': '<f8', 'fortran_order': False, 'shape': %r, }" % (shape,)).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 64
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x.npy", npy)
        archive.writestr("y.npy", npy)
    return out.getvalue()


@pytest.mark.parametrize("case", ["setstate pickle", "200 KB CSV field", "npz claiming 10^10 rows"])
def test_hostile_uploads_are_refused_with_one_clear_message(case):
    """Issue 16: each of these showed a traceback on the Checkpoint page (TypeError, _csv.Error, MemoryError)."""
    from llc_core.files.checkpoint import load_checkpoint
    from llc_core.files.datafiles import read_arrays

    if case == "setstate pickle":
        with pytest.raises(LLCInputError, match="checkpoint") as err:
            load_checkpoint(_torch_pickle_with_setstate())
    elif case == "200 KB CSV field":
        with pytest.raises(LLCInputError, match="CSV") as err:
            read_arrays(b"x,y\n" + b"1," + b"9" * 200_000 + b"\n2,3\n")
    else:
        with pytest.raises(LLCInputError, match=r"^the .npz array 'x' claims shape \(10000000000, 3\)") as err:
            read_arrays(_npz_claiming((10**10, 3)))
    assert "Traceback" not in str(err.value) and len(str(err.value)) < 400


def test_a_server_runs_at_most_its_worker_limit_and_the_others_wait(monkeypatch):
    from llc_core.execution.background import SLOTS, WORKER_LIMIT_ENV, BackgroundRun, worker_limit

    started: list[int] = []

    def waits_for_stop(config, on_snapshot=None, stop=None):
        started.append(1)
        while not stop():
            time.sleep(0.02)
        raise LLCInputError("stopped")

    def until(condition, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    busy_before = SLOTS.busy  # runs of other tests still ending
    monkeypatch.setenv(WORKER_LIMIT_ENV, str(busy_before + 2))
    assert worker_limit() == busy_before + 2
    runs = [BackgroundRun(RunConfig.from_dict({}), waits_for_stop, worker="thread").start() for _ in range(3)]
    until(lambda: len(started) == 2)
    time.sleep(0.3)
    assert len(started) == 2 and runs[2].poll().status == "waiting" and not runs[2].poll().finished
    runs[0].request_stop()  # a worker frees up: the waiting run starts
    until(lambda: len(started) == 3)
    assert runs[2].poll().status != "waiting"

    monkeypatch.setenv(WORKER_LIMIT_ENV, str(busy_before + 2))  # runs 1 and 2 hold both slots
    queued = BackgroundRun(RunConfig.from_dict({}), waits_for_stop, worker="thread").start()
    assert queued.poll().status == "waiting"
    queued.request_stop()  # stopped while waiting: ends at once, having run nothing
    progress = queued.join(2.0)
    assert progress.status == "failed" and "waiting for a free worker" in progress.error and len(started) == 3
    for run_ in runs:
        run_.request_stop()
        run_.join(5.0)
    until(lambda: SLOTS.busy == busy_before)
    monkeypatch.setenv(WORKER_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match="LLC_MAX_WORKERS"):
        worker_limit()


def run_file_fuzz(seed: int, count: int, readers: str, timeout: float) -> list[dict]:
    """tests/fuzz_files.py under a 4 GiB address-space limit (torch and transformers map ~0.7 GiB; the largest
    file read is 256 MiB), so that an allocation a file merely claims fails, and is reported, as MemoryError."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_files.py"), str(seed), str(count), "20", readers],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, preexec_fn=limit_memory, check=False)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines and lines[-1].get("done") == count, proc.stderr[-2000:]
    return lines[:-1]


def test_fuzzed_uploads_are_read_or_refused_with_one_clear_line():
    """300 files (seeded) made from valid checkpoints (safetensors, torch.save zip and legacy, .pt2, a Hugging
    Face zip), data files (.npz, .csv, .safetensors, .pt) and architecture specs by truncation, byte flips,
    renamed members, huge shapes claimed in .npy and safetensors headers, zip bombs, deep JSON, long CSV
    fields and tensors of every kind: each is read, or refused with one LLCInputError line; nothing else
    is raised, nothing hangs (20 s each), nothing allocates what a header merely claims (RLIMIT_AS)."""
    assert run_file_fuzz(seed=0, count=300, readers="checkpoint,data,spec", timeout=120) == []


def test_fuzzed_zips_of_checkpoints_are_read_or_refused_with_one_clear_line():
    assert run_file_fuzz(seed=0, count=100, readers="trajectory", timeout=120) == []


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def _torch_file(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _fuzz_findings():
    """The files on which tests/fuzz_files.py found a reader raising something else than LLCInputError."""
    import torch

    npy = _npz_claiming((10**10, 3))
    renamed = _zip({"x": _zip_member(npy, "x.npy"), "y.npy": _zip_member(npy, "y.npy")})
    non_utf8 = _zip({"w\u00e4.pkl": b"\x80\x02."}).replace("w\u00e4".encode(), b"w\x97\x97")  # flagged UTF-8, is not
    deep = "[" * 100_000 + "]" * 100_000
    header = ",".join(["c"] * 20_000)
    return [
        ("data", renamed, "claims shape (10000000000, 3)"),  # an .npy without its suffix: np.load allocated 224 GiB
        ("data", _zip({"notes.txt": b"hi", "x.npy": _zip_member(npy, "y.npy")}), "'notes.txt' is not a NumPy array"),
        ("data", _zip({"x.npy": b"\x93NUMPY\x01\x00\x10\x00{{{{{{{{{{{{{{{\n", "y.npy": b""}), "corrupt array header"),
        ("data", _torch_file({"x": torch.ones(4, 2, dtype=torch.bfloat16), "y": torch.ones(4)}), None),  # numpy: no bf16
        ("data", _torch_file({"x": torch.eye(3).to_sparse(), "y": torch.ones(3)}), "is a sparse coo tensor"),
        ("data", _torch_file({"x": torch.empty(3, 2, device="meta"), "y": torch.ones(3)}), "is a meta tensor"),
        ("data", (header + "\n" + header + "\n" + header + "\n").encode(), "empty or repeated column names"),
        ("checkpoint", _torch_file({"w.weight": torch.ones(2, 2, dtype=torch.float8_e4m3fn)}), None),  # isfinite
        ("checkpoint", _torch_file({"w.weight": torch.eye(2).to_sparse()}), "is a sparse coo tensor"),
        ("checkpoint", _torch_file({"w.weight": torch.empty(2, 2, device="meta")}), "is a meta tensor"),
        ("checkpoint", _torch_file({"w.weight": torch.ones(2, 2, dtype=torch.complex64)}), "is a complex tensor"),
        ("checkpoint", non_utf8, "corrupt or truncated"),
        ("spec", deep.encode(), "nested too deeply"),
    ]


def _zip_member(npz: bytes, name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(npz)) as archive:
        return archive.read(name)


@pytest.mark.parametrize("index", range(13))
def test_what_the_file_fuzz_found_is_read_or_refused_clearly(index):
    from llc_core.files import checkpoint as ckpt
    from llc_core.files import datafiles

    reader, body, message = _fuzz_findings()[index]
    read = {"data": lambda: datafiles.read_arrays(body), "checkpoint": lambda: ckpt.load_checkpoint(body),
            "spec": lambda: ckpt.parse_architecture(body.decode())}[reader]
    if message is None:
        read()
        return
    with pytest.raises(LLCInputError, match=re.escape(message)) as err:
        read()
    assert "\n" not in str(err.value) and len(str(err.value)) < 600


def test_a_deep_hugging_face_config_is_refused_clearly():
    from llc_core.files.huggingface import parse_config

    with pytest.raises(LLCInputError, match="config.json is not valid JSON"):
        parse_config(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
