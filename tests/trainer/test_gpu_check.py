"""bench/gpu_check.py in its smoke mode (a subprocess, as it is run): one JSON object on stdout with
the keys the GPU run reports and positive throughputs. Needs no GPU: without CUDA it runs tiny
models on the CPU with gloo."""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.launch import project_env

MODEL_KEYS = {"model", "img_size", "batch_size", "steps", "dtype", "train_img_per_s", "model_img_per_s",
              "forward_gflops_per_img", "train_gflops_per_img", "mfu", "mfu_model_only", "loss_finite"}


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.multiprocess  # gpu_check's own torchrun check
def test_gpu_check_tiny_prints_one_json_object(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--tiny", "--workdir", str(tmp_path / "data")],
                       cwd=ROOT, env=project_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout  # stdout holds the JSON object and nothing else
    out = json.loads(lines[0])
    assert {"device", "tiny", "peak_bf16_flops", "loader", "vit", "regnet", "ffcv_loader", "torchrun",
            "seconds"} <= set(out)
    assert out["tiny"] is True
    cuda = out["device"] != "cpu"
    for role, family in (("vit", "vit_"), ("regnet", "regnety_")):
        m = out[role]
        assert MODEL_KEYS <= set(m), m
        assert m["model"].startswith(family) and m["dtype"] == "bf16" and m["loss_finite"]
        assert positive(m["train_img_per_s"]) and positive(m["model_img_per_s"]), m
        assert positive(m["forward_gflops_per_img"]) and m["train_gflops_per_img"] == 3 * m["forward_gflops_per_img"]
        if not cuda:
            assert m["mfu"] is None and m["mfu_model_only"] is None
    if out["data"]["ffcv_error"] is None:  # FFCV installed: the loader check ran with every core
        assert positive(out["ffcv_loader"]["img_per_s"]) and out["ffcv_loader"]["workers"] == os.cpu_count()
    else:
        assert out["ffcv_loader"] is None
    t = out["torchrun"]
    assert t["ok"], t
    assert t["backend"] == ("nccl" if cuda else "gloo") and t["world_size"] == 1
    if not cuda:
        assert out["device"] == "cpu" and out["peak_bf16_flops"] is None
