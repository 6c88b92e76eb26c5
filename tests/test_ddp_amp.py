"""Two gloo processes (torchrun, as tests/test_train.py's DDP test) training with AMP and an EMA
(issue 25): after the steps, every rank holds the same weights and the same EMA, and they are the
ones rank 0 saved. Each rank writes what it holds to a file; the test compares the files."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from maskdepth.checkpoint import load_checkpoint
from maskdepth.runtime import cpu_fp16_unsupported

from conftest import QUICK, REPO, run_process_group

NO_FP16 = cpu_fp16_unsupported()

# Runs on each rank under torchrun: fit() as `maskdepth train` runs it, with `build` wrapped so that
# the rank keeps its Parts, then the rank's model, EMA and scaler go to OUT/rank<R>.pt.
RANK_SCRIPT = textwrap.dedent('''
    import os, sys, warnings
    import torch
    from maskdepth import train
    from maskdepth.config import load_config

    warnings.filterwarnings("ignore", message="train.amp=fp16 on the CPU is slow")
    out, config, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    kept = {}
    build = train.build

    def keeping_build(*args, **kwargs):
        kept["parts"] = build(*args, **kwargs)
        return kept["parts"]

    train.build = keeping_build
    train.fit(load_config(config, overrides))
    p = kept["parts"]
    plain = lambda module: {k: v.detach().clone() for k, v in module.state_dict().items()}
    torch.save({"model": plain(p.model), "ema": plain(p.ema.module), "ema_updates": p.ema.updates,
                "scaler": p.scaler.state_dict()}, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
''')


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow
@pytest.mark.parametrize("amp", [pytest.param("fp16", marks=pytest.mark.skipif(
    NO_FP16 is not None, reason=f"no fp16 on the CPU in this torch: {NO_FP16}")), "bf16"])
def test_two_gloo_ranks_with_amp_and_ema_hold_the_same_weights_and_ema(amp: str, tiny_overrides: list[str],
                                                                       tmp_path: Path) -> None:
    script, ranks = tmp_path / "rank.py", tmp_path / "ranks"
    script.write_text(RANK_SCRIPT)
    ranks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(ranks), str(QUICK), *tiny_overrides, "train.epochs=1", f"train.amp={amp}", "train.ema=0.9",
           "data.flip=true"]
    done = run_process_group(cmd, env=env, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    r0, r1 = (torch.load(ranks / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] >= 2 and r0["ema_updates"] == r1["ema_updates"] == saved["step"]
    assert not _differing(r0["model"], r1["model"]), "the ranks' optimised weights differ"
    assert not _differing(r0["ema"], r1["ema"]), "the ranks' EMA copies differ"
    assert not _differing(r0["model"], saved["raw_model"]) and not _differing(r0["ema"], saved["model"])
    assert r0["scaler"] == r1["scaler"] == saved["scaler"]
    if amp == "fp16":
        assert r0["scaler"]["scale"] > 0
