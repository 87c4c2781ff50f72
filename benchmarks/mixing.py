"""Mixing of LDAM's chains on the quality benchmarks: R-hat, ESS, ESS per second, MALA's acceptance and step.

The target networks are ``benchmarks/quality.py``'s (MNIST CNN; RGB digit CNN on normalised inputs), its 10 class
logits sampled with 16 chains each and the library's defaults (real data = the target's training images), plus
any ``--set`` keywords. Printed per run, as one Markdown row:

- R-hat: median and share <= 1.1 over the logits of the activation's rank-normalised split R-hat (sampling phase);
- ESS: median bulk ESS of the activation (all chains of a logit together); ESS/s: its sum over logits / wall time;
- acceptance (MALA): min / median / max over the logits; step: min / max of ``SampleResult.step_sizes``;
- judge agreement, realism, nearest-real, diversity, lift as in ``quality.py``; activation ratio in the JSON line.

``--init black`` / ``--init real`` start every chain from one image (black; the first held-out digit): how far the
chains forget their start (compare diversity and activation ratio with the ``--init noise`` row).

``--rounds N`` runs N calls on the same network as the callback's rounds run them with persistent chains
(``lightning_ldam.engine.persistent_chains.PersistentChains``, ``--redraw`` of the chains re-drawn each round, seed +
round) and prints a row per round: how far a continued chain moves in a round (L2 from its start over the mean L2
between
two of the neuron's chains, median over neurons: 0 = not at all, ≈ 1 = as far as chains are apart) and the mixing
measures.

Run: ``python benchmarks/mixing.py --case mnist --set method=mala [--set target_accept=none]``,
``python benchmarks/mixing.py --case mnist --rounds 4 --redraw 0.25 [--continued-search 0]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality as Q  # noqa: E402

import lightning_ldam as ldam  # noqa: E402
from lightning_ldam.engine.persistent_chains import PersistentChains, continued_rows, redrawn_rows  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["mnist", "rgb"], default="mnist")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", help="extra ldam.sample keyword, e.g. --set method=mala")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cache", default=None, help="torch.save the trained bench here and reuse it when present")
    p.add_argument("--init", choices=["noise", "black", "real"], default="noise",
                   help="chains start from noise (the default), all from a black image, or all from one real "
                        "(held-out) image")
    p.add_argument("--rounds", type=int, default=1, help="calls that continue each other's chains")
    p.add_argument("--redraw", type=float, default=0.25, help="share of the chains re-drawn each round")
    p.add_argument("--continued-search", type=int, default=None,
                   help="burn-in search steps of the rounds that continue chains (default: the sampler's)")
    p.add_argument("--no-hold", dest="hold", action="store_false",
                   help="continued chains run burn-in's search too (the callback holds them through it)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {k: Q.type_guess(v) for k, v in (kv.split("=", 1) for kv in (args.set or []))}
    if args.cache and os.path.exists(args.cache):
        bench = torch.load(args.cache, weights_only=False)
    else:
        build = Q.build_mnist if args.case == "mnist" else Q.build_rgb
        bench = build(args.seed, Q.DEFAULT_EPOCHS[args.case], True)
        if args.cache:
            torch.save(bench, args.cache)
    kw = dict(input_shape=bench.input_shape, chains=args.chains, seed=args.seed, real_data=bench.data["target_x"])
    if bench.normalize is not None:
        kw.update(normalize=bench.normalize, value_range=(0.0, 1.0))
    if args.init != "noise":  # start-forgetting: every chain of every neuron starts from one image
        one = torch.zeros(bench.input_shape) if args.init == "black" else bench.data["held_x"][0]
        kw["init"] = one.expand(args.chains, *bench.input_shape).clone()
    if args.rounds > 1:
        return rounds(bench, kw, extra, args)
    t0 = time.perf_counter()
    res = ldam.sample(bench.target, f"{bench.logits}:0-9", **{**kw, **extra})
    secs = time.perf_counter() - t0
    out = {k: round(v, 3) for k, v in Q.score_logits(bench, res, {}).items()}
    rh, ess = res.rhat_activation, res.ess_activation
    out.update(rhat_ok=round((rh <= 1.1).float().mean().item(), 2), seconds=round(secs, 1),
               ess_per_s=round(ess.sum().item() / secs, 2))
    if res.acceptance_rate is not None:
        a = res.acceptance_rate
        out.update(acc_min=round(a.min().item(), 3), acc_med=round(a.median().item(), 3),
                   acc_max=round(a.max().item(), 3))
    if res.step_sizes is not None:
        out.update(step_min=round(res.step_sizes.min().item(), 5), step_max=round(res.step_sizes.max().item(), 5))
    print(json.dumps({"case": args.case, "init": args.init, **{k: str(v) for k, v in extra.items()}, **out}))
    acc = (f"{out['acc_min']:.2f} / {out['acc_med']:.2f} / {out['acc_max']:.2f}" if "acc_med" in out else "—")
    step = f"{out['step_min']:.4f}–{out['step_max']:.4f}" if "step_min" in out else "—"
    print(f"| `{shlex.join(sys.argv[1:] if argv is None else argv)}` | {out['rhat']:.2f} ({out['rhat_ok']:.0%}) | "
          f"{out['ess']:.1f} | {out['ess_per_s']:.2f} | {acc} | {step} | {out['judge_agreement']:.2f} | "
          f"{out['realism']:.2f} | {out['diversity']:.2f} | {out['median_lift']:.2f} | {secs:.0f} |")


def rounds(bench, kw, extra, args) -> None:
    """The callback's rounds on fixed weights: each call continues the last one's chains (see the docstring)."""
    store, disc = PersistentChains(args.redraw), None
    print("| round | continued chains: L2 moved / L2 between chains | R-hat (≤ 1.1) | ESS | judge | realism | "
          "diversity | lift | s |\n|---|---|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        shape = (10, args.chains, *bench.input_shape)
        init = store.starts("raw", shape, r, args.seed, (0.0, 1.0))
        call = {**kw, **extra, "seed": args.seed + r, "discriminator": disc}
        if init is not None:
            call["init"] = init
            if args.continued_search is not None:
                call["search"] = args.continued_search
            if args.hold:  # as the callback does: continued chains skip the search the re-drawn ones run
                call["continued"] = continued_rows(args.chains, args.redraw, r)
        t0 = time.perf_counter()
        res = ldam.sample(bench.target, f"{bench.logits}:0-9", **call)
        secs = time.perf_counter() - t0
        disc = res.discriminator
        moved = "—"
        if init is not None:  # L2 from its start / mean L2 between two chains of the neuron (as ldam/drift reads)
            kept = [i for i in range(args.chains) if i not in set(redrawn_rows(args.chains, args.redraw, r).tolist())]
            a, b = res.images[:, kept].flatten(2), init[:, kept].flatten(2)
            own = (a - b).norm(dim=-1).mean(1)
            flat = res.images.flatten(2)
            apart = torch.cdist(flat, flat).sum((1, 2)) / (args.chains * (args.chains - 1))
            moved = f"{(own / apart).median().item():.2f}"
        store.keep("raw", res.images)
        q = Q.score_logits(bench, res, {})
        rh = res.rhat_activation
        print(f"| {r} | {moved} | {rh.median().item():.2f} ({(rh <= 1.1).float().mean().item():.0%}) | "
              f"{res.ess_activation.median().item():.1f} | {q['judge_agreement']:.2f} | {q['realism']:.2f} | "
              f"{q['diversity']:.2f} | {q['median_lift']:.2f} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
