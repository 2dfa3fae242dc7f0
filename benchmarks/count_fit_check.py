"""Can Cell-Net fit the counts of a handful of frames? A diagnostic of the loss (issue 15).

Trains a fresh CellNet on N framed frames of a dataset (no augmentation) and prints, every
50 steps, the pixel loss of the last batch, the count MAE and exact share on those same N
frames (eval mode), the predicted mass where the target density is empty (background) and
the mean signed count error. A model that fits its training frames' pixels but not their
counts shows that the loss does not constrain the integral (docs/models/count.md, "Count
term").

Usage::

    nice python benchmarks/count_fit_check.py --data DATASET [--frames 16] [--size 128]
        [--steps 300] [--lr 3e-4] [--count-weight 0] [--head-bias -5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from blastoseg.models.cellnet import CellNet, CellNetConfig
    from blastoseg.train.count_data import CountDataset
    from blastoseg.train.count_losses import cbmse_loss, count_loss

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (our format)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="working size (multiple of 8)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--count-weight", type=float, default=0.0,
                    help="weight of |integral error| added to CBMSE (0: the paper's loss)")
    ap.add_argument("--head-bias", type=float, default=-5.0,
                    help="initial bias of the density head (CellNet's default -5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    torch.manual_seed(args.seed)

    ds = CountDataset([args.data], working_size=args.size, augment=None,
                      max_items=args.frames, seed=args.seed)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["image"] for it in items])
    d = torch.stack([it["density"] for it in items])
    true = d.sum((1, 2, 3))
    net = CellNet(CellNetConfig.from_dict({"working_size": args.size}))
    torch.nn.init.constant_(net.head.bias, args.head_bias)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    print(f"{len(items)} frames of {args.data}, true counts {true.round().int().tolist()}; "
          f"count weight {args.count_weight}, head bias {args.head_bias}, lr {args.lr}")
    print("| step | batch loss | count MAE | exact | background mass | signed error | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(items), (args.batch_size,), generator=gen)
        pred = net(x[idx])
        loss = cbmse_loss(pred, d[idx])
        if args.count_weight:
            loss = loss + args.count_weight * count_loss(pred, d[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                full = net(x)
            net.train()
            counts = full.sum((1, 2, 3))
            err = counts - true
            background = float((full * (d < 1e-7)).sum((1, 2, 3)).mean())
            exact = float((counts.round() == true.round()).float().mean())
            print(f"| {step} | {loss.item():.5f} | {float(err.abs().mean()):.2f} | "
                  f"{100 * exact:.0f} % | {background:.2f} | {float(err.mean()):+.2f} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
