"""Per-step costs of a default LDAM call at 224 px on ResNet-50, measured piece by piece (for round estimates).

Times, on random weights and random images (cost does not depend on either): the target's forward and input
gradient for ``--chains`` chains, D's log-density gradient for as many, and one D update on 64 real + 64 fake
images (the trainer's batch; 8 such updates per burn-in step on colour images): the mean of ``--repeats``
calls after one untimed call.

Run: ``python benchmarks/step_costs.py [--size 224] [--chains 8] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lightning_ldam.sampling.discriminator import build_discriminator  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval().requires_grad_(False)
    x = torch.rand(args.chains, 3, args.size, args.size, requires_grad=True)
    disc = build_discriminator(3, (args.size, args.size), seed=0)
    opt = torch.optim.Adam(disc.parameters(), 1e-3, betas=(0.5, 0.999))
    real, fake = torch.rand(64, 3, args.size, args.size), torch.rand(64, 3, args.size, args.size)

    def target_grad():
        return torch.autograd.grad(net(x)[:, 3].sum(), x)

    def disc_grad():
        return torch.autograd.grad(F.logsigmoid(disc(x)).sum(), x)

    def disc_update():
        logits = disc(torch.cat([real, fake]))
        loss = F.softplus(-logits[:64]).mean() + F.softplus(logits[64:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for name, f, per in (("target forward + input gradient", target_grad, args.chains),
                         ("D log-density gradient", disc_grad, args.chains),
                         ("one D update (64 + 64)", disc_update, 1)):
        f()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            f()
        secs = (time.perf_counter() - t0) / args.repeats
        unit = "per chain-step" if per > 1 else "per update"
        print(f"{name}: {secs:.3f} s per call, {secs / per * 1000:.1f} ms {unit}")
    print(f"ResNet-50 at {args.size} px, {args.chains} chains, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")


if __name__ == "__main__":
    main()
