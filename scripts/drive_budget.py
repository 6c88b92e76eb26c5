"""python scripts/drive_budget.py [CONFIG] [--epoch-minutes 25] [--hours 6] [key=value ...]

What a run leaves in Google Drive's trash: Drive keeps every replaced or deleted file in its
trash (counted against the quota for 30 days), and a run replaces `last.pt` every
`train.checkpoint_minutes` and at each epoch's end, replaces `best.pt` when validation improves,
and deletes `epoch_NNN.pt` beyond `train.keep_last`. This builds the config's model and
optimiser, takes one Adam step on random inputs (so the optimiser state is full size), writes a
real checkpoint to a temp folder and prints its size, then the trash a run of `--hours` leaves
at `--epoch-minutes` per epoch (worst case: best.pt replaced every epoch). docs/robustness.md's Drive
figures come from `python scripts/drive_budget.py configs/full192.yaml`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from maskdepth.checkpoint import TrainState, make_state, save_checkpoint
from maskdepth.config import config_to_dict, load_config
from maskdepth.model import build_model
from maskdepth.runtime import grad_scaler


def checkpoint_bytes(config: str, overrides: list[str]) -> int:
    """Size in bytes of a checkpoint of `config` after one optimiser step (CPU, fp32)."""
    cfg = load_config(config, [*overrides, "device=cpu"])
    model = build_model(cfg.model.name, **cfg.model.options())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    size = model.stride * 2
    logits, depth = model(torch.rand(2, 3, size, size), torch.rand(2, 3, size, size))
    (logits.mean() + depth.mean()).backward()
    optimizer.step()
    state = make_state(TrainState(epoch=1, step=1), config=config_to_dict(cfg), model=model, optimizer=optimizer,
                       scaler=grad_scaler(enabled=False))
    with tempfile.TemporaryDirectory() as tmp:
        return save_checkpoint(Path(tmp) / "last.pt", state).stat().st_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("config", nargs="?", default="configs/full192.yaml")
    parser.add_argument("--epoch-minutes", type=float, default=25.0, help="minutes per epoch (default 25)")
    parser.add_argument("--hours", type=float, default=6.0, help="length of the run (default 6)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides)
    mb = checkpoint_bytes(args.config, args.overrides) / 1e6
    minutes = 60 * args.hours
    epochs = minutes / args.epoch_minutes
    mid_epoch = minutes / cfg.train.checkpoint_minutes if cfg.train.checkpoint_minutes else 0
    replaced = mid_epoch + epochs * (2 + (1 if cfg.train.keep_last else 0))  # last.pt, best.pt, epoch_NNN.pt
    print(f"{args.config}: checkpoint {mb:.1f} MB (model {cfg.model.name}, encoder {cfg.model.encoder})")
    print(f"{args.hours:g} h at {args.epoch_minutes:g} min/epoch, last.pt every {cfg.train.checkpoint_minutes:g} min, "
          f"keep_last {cfg.train.keep_last}: about {replaced:.0f} replaced files, {replaced * mb / 1e3:.1f} GB in "
          f"Drive's trash ({replaced * mb / 1e3 / args.hours:.2f} GB per hour)")


if __name__ == "__main__":
    main()
