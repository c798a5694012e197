"""Margin loss of a Sharing preset at initialization: PML's normalization over the official one.

For the first ``--batches`` class and shared batches, with the preset's untrained model and the
same mined triplets, prints the ratio of the loss with PML's default reducer (divisor: active
positive + active negative terms) to the preset's (official: triplets with an active term).

    python benchmarks/margin_normalization.py sharing-small --batches 10
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from dmlkit import config
from dmlkit.engine.train import build_components
from dmlkit.losses.by_name import build_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    cfg = config.load(args.preset, args.set)
    data, method, model = build_components(cfg)
    model.train()
    sharing = cfg.method.parts.sharing
    pml = {"class": build_loss(cfg.method.loss.model_copy(update={"reducer": None}),
                               method.num_classes, cfg.model.head.dim),
           "shared": build_loss(sharing.shared_loss.model_copy(update={"reducer": None}),
                                sharing.num_surrogate_labels, sharing.shared_dim)}
    samplers = method.batch_samplers(data.splits.train.labels, cfg.train)
    for name, sampler in samplers.items():
        sampler.set_epoch(0)
        loader = DataLoader(data.stream(name), batch_sampler=sampler)
        ratios = []
        for b, (images, labels, _) in zip(range(args.batches), loader, strict=False):
            with torch.no_grad():
                out = model.embed_heads(images)
                if name == "class":
                    emb, y = out["embedding"], method.contiguous(labels)
                    triplets = method.miner(emb, y)
                    official = method.loss(emb, y, triplets)
                else:
                    emb, y = out["shared"], sampler.surrogate_labels(b)
                    triplets = method.sharing.shared_miner(emb, y, exclude_labels=labels)
                    official = method.sharing.shared_loss(emb, y, triplets)
                ratios.append(float(pml[name](emb, y, triplets) / official))
        print(f"{name}: PML / official over {len(ratios)} batches: "
              f"min {min(ratios):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
