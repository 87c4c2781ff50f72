"""Mutation check: realistic one-line bugs, each of which some test must catch.

Each mutant is one textual replacement in one module. The package and the tests are copied to a scratch folder,
the mutant is applied there (the checkout is never touched), and pytest runs the mutant's test files with ``-x``;
a mutant is *killed* when a test fails, and the first failing test is recorded. A mutant that survives its files
is run against the whole suite before it is reported as surviving. First, as a control, each group of test files
runs the same way on the unmutated copy: a test that fails there would "kill" every mutant it meets.

    python benchmarks/mutants.py            # every mutant, prints the table
    python benchmarks/mutants.py --write    # and writes it into benchmarks/README.md (MUTANTS)
    python benchmarks/mutants.py --only ema-decay-flipped
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    module: str  # path under lightning_ldam/
    old: str
    new: str
    tests: Tuple[str, ...]  # test files to run first
    also: Tuple[Tuple[str, str, str], ...] = ()  # further (module, old, new) replacements of the same bug


MUTANTS = [
    # issue #19's list
    Mutant("ema-decay-flipped", "the own EMA weighs the new weights by decay, not 1 - decay", "weights/ema.py",
           "[current[i] for i in floats], 1.0 - decay)", "[current[i] for i in floats], decay)",
           ("tests/test_averaging.py",)),
    Mutant("reservoir-never-replaces", "once full, the reservoir keeps its first inputs", "callback/reservoir.py",
           "            while self._next < end:", "            while False:", ("tests/test_reservoir.py",)),
    Mutant("nan-rows-admitted", "rows with NaN/Inf enter the reservoir", "callback/reservoir.py",
           "    return None if rows.numel() == inputs.shape[0] else rows", "    return None",
           ("tests/test_reservoir.py", "tests/test_callback_faults.py")),
    Mutant("budget-inverted", "a round is skipped when it fits the budget", "callback/budget.py",
           "estimate <= self.allowance()", "estimate > self.allowance()",
           ("tests/test_budget.py", "tests/test_callback.py")),
    Mutant("dry-run-skipped", "the first batch is not tried before its optimizer step", "callback/ldam_callback.py",
           "            if self._collect(batch, first=True):\n                self._dry_run(pl_module)",
           "            if self._collect(batch, first=True):\n                self._run.checked = True",
           ("tests/test_bad_inputs.py",)),
    Mutant("compare-seed-ignored", "`lightning-ldam compare --seed` samples with seed 0", "cli.py",
           "seed=args.seed, device=inputs.device", "seed=0, device=inputs.device", ("tests/test_cli.py",)),
    Mutant("transfer-wrong-variant", "raw's unit is read on raw's own samples instead of the averaged ones",
           "engine/rounds.py", "results[ref].cross_activations[name] = read(ref, results[name].images)",
           "results[ref].cross_activations[name] = read(ref, results[ref].images)",
           ("tests/test_averaging_metrics.py",)),
    Mutant("health-dead-inverted", "a unit that varies is called dead", "report/metrics.py",
           "    dead = finite & (hi == lo)", "    dead = finite & (hi != lo)", ("tests/test_averaging_metrics.py",)),
    Mutant("state-drops-discriminators", "the checkpoint state leaves out the warm discriminators", "callback/ldam_callback.py",
           '"discriminators": self._discs.state_dict(),', '"discriminators": {},', ("tests/test_callback.py",)),
    Mutant("ddp-gather-drops-rank-1", "rank 0 merges its own shard only", "engine/rounds.py",
           "merge_shards([g[0].get(name) for g in gathered])", "merge_shards([g[0].get(name) for g in gathered[:1]])",
           ("tests/test_callback_ddp.py",)),
    Mutant("transfer-on-own-samples", "the averaged unit is read on its own samples instead of raw's", "engine/rounds.py",
           "results[name].cross_activations[ref] = read(name, results[ref].images)",
           "results[name].cross_activations[ref] = read(name, results[name].images)",
           ("tests/test_averaging_metrics.py",)),
    # this change's own mechanisms
    Mutant("writer-not-reopened", "a failed TensorBoard write leaves the broken writer in place",
           "report/tensorboard_writer.py",
           "        reopen(writer, committed)\n", "        pass\n", ("tests/test_run_never_ends.py",)),
    Mutant("no-disk-reserve", "the callback writes to a disk's last bytes", "report/writers.py",
           "    if free - needed < DISK_RESERVE_BYTES:", "    if False:", ("tests/test_run_never_ends.py",)),
    Mutant("shape-change-admitted", "a batch of another image size goes into the reservoir", "callback/reservoir.py",
           "        elif tuple(inputs.shape[1:]) != shape:", "        elif False:", ("tests/test_run_never_ends.py",)),
    Mutant("batch-errors-escape", "an unreadable late batch ends the run", "callback/ldam_callback.py",
           "            if first and argument_given(err.argument, self._given, self.settings):",
           "            if argument_given(err.argument, self._given, self.settings):",
           ("tests/test_run_never_ends.py",)),
    Mutant("every-argument-blamed", "the first-batch trial fails the run for arguments the user never set",
           "callback/settings.py", "    return root in given", "    return True", ("tests/test_run_never_ends.py",)),
    Mutant("state-key-from-repr", "the state key is the spec's repr (a set's order follows the hash seed)",
           "callback/ldam_callback.py", "neurons=s.request.key()", "neurons=repr(s.neurons)", ("tests/test_run_never_ends.py",)),
    Mutant("snapshot-stays-compiled", "snapshots keep torch.compile's wrappers", "weights/snapshot.py",
           "    copied = eager(copied)\n", "", ("tests/test_run_never_ends.py",)),
    Mutant("batch-of-one-unpadded", "a batch of one reaches a model that needs batch statistics", "sampling/activations.py",
           "    single = x.shape[0] == 1\n", "    single = False\n", ("tests/test_run_never_ends.py",)),
    Mutant("nan-mean-accepted", "normalize=(nan, std) passes the checks", "_validation.py",
           "    if not bool(torch.isfinite(mean).all()):", "    if False:", ("tests/test_bad_inputs.py",)),
    Mutant("seed-range-unchecked", "seeds past 64 bits reach torch.Generator", "_validation.py",
           "    if not 0 <= value <= SEED_MAX:", "    if False:", ("tests/test_bad_inputs.py",)),
    Mutant("unicode-digits-accepted", "str.isdigit() lets '²' through to int()", "sampling/targets.py",
           "all(p.isascii() and p.isdigit() for p in parts)", "all(p.isdigit() for p in parts)",
           ("tests/test_bad_inputs.py",)),
    Mutant("shared-module-read", "a module called twice per forward is read at its first call", "sampling/api.py",
           "    repeated = {p: n for p, n in calls.items() if n > 1}", "    repeated = {}",
           ("tests/test_bad_inputs.py",)),
    # the sampler's laws at the walls and the state a call returns
    Mutant("fold-to-clamp", "a step that leaves the box is clamped onto the wall instead of reflected",
           "sampling/steppers.py",
           "y = fold(y) if reflect else y.clamp_(0.0, 1.0)", "y = y.clamp_(0.0, 1.0)",
           ("tests/test_sampling_laws.py",)),
    Mutant("burn-in-state-returned", "the chains run every step, but a call returns their state at burn-in's end",
           "sampling/chains.py", "        self.burn_in.freeze()\n",
           "        self.burn_in.freeze()\n        self.burned = self.state.u.clone()\n",
           ("tests/test_sampling_laws.py",),
           also=(("sampling/api.py", "images=(lo + (hi - lo) * chains.u)", "images=(lo + (hi - lo) * chains.burned)"),)),
    Mutant("mala-accepts-on-autocast", "MALA's accept test reads the bf16 autocast forward's activations",
           "sampling/steppers.py", "prop = self.objective(y, exact=True)", "prop = self.objective(y)",
           ("tests/test_sampling_laws.py",),
           also=(("sampling/steppers.py", "self.current = self.objective(self.state.u, exact=True)",
                  "self.current = self.objective(self.state.u)"),)),
    Mutant("chains-not-continued", "the callback keeps each variant's chains but every round starts afresh",
           "callback/ldam_callback.py",
           "variants.append(variant if init is None else dataclasses.replace(variant, init=init, continued=held))",
           "variants.append(variant)", ("tests/test_persistent_chains.py",)),
    Mutant("continued-chains-search", "chains marked continued run burn-in's search like the re-drawn ones",
           "sampling/burn_in.py", "            torch.where(state.held, before, state.u, out=state.u)", "            pass",
           ("tests/test_sampling_laws.py",)),
    Mutant("redraw-differs-per-variant", "each variant re-draws its chains from its own stream (no common numbers)",
           "engine/persistent_chains.py", "(int(seed) * 1_000_003 + int(round_index) * 7_919) % 2 ** 62",
           "(int(seed) * 1_000_003 + int(round_index) * 7_919 + hash(name) % 9973) % 2 ** 62",
           ("tests/test_persistent_chains.py",)),
    Mutant("metric-noise-unscaled", "a diagonal metric scales the drift but not the noise (M·∇ with √ε·ξ)",
           "sampling/steppers.py", "        noise = noise * state.mass_sqrt", "        pass",
           ("tests/test_sampling_laws.py",),
           also=(("sampling/steppers.py", "            sigma = sigma * state.mass_sqrt", "            pass"),)),
    Mutant("hmc-no-momentum-flip", "HMC reflects a leapfrog's position at a wall but keeps its momentum",
           "sampling/steppers.py", "        torch.where(flip, -p, p, out=p)", "        pass",
           ("tests/test_sampling_laws.py",)),
    Mutant("reopen-same-second", "the event file opened after a failed write may sort before the one it replaces",
           "report/tensorboard_writer.py", "    _wait_past(committed)", "    pass", ("tests/test_run_never_ends.py",)),
]


def _copy_tree(dest: str) -> None:
    for name in ("lightning_ldam", "tests", "benchmarks", "examples"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(dest, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.png", "runs"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), dest)


def _pytest(dest: str, targets: List[str], timeout: int) -> Tuple[bool, Optional[str], float]:
    """``(killed, first failing test, seconds)``."""
    env = {**os.environ, "PYTHONPATH": dest, "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets], cwd=dest,
                          env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.M)
    if done.returncode not in (0, 1) and not failed:
        raise RuntimeError(f"pytest exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.returncode != 0, (failed[0] if failed else None), seconds


def control(mutants: List[Mutant], timeout: int = 1500) -> None:
    """Each distinct group of the mutants' test files, run as a mutant's are, on the unmutated copy: all must pass."""
    groups = list(dict.fromkeys(m.tests for m in mutants))
    with tempfile.TemporaryDirectory(prefix="ldam-control-") as dest:
        _copy_tree(dest)
        for tests in groups:
            failed, test, seconds = _pytest(dest, list(tests), timeout)
            print(f"control {' '.join(tests)}: {'FAILED ' + str(test) if failed else 'passed'} ({seconds:.0f} s)",
                  flush=True)
            if failed:
                raise RuntimeError(f"{test} fails without a mutant (run as `pytest -x {' '.join(tests)}`): it would "
                                   f"count as killing every mutant of that group; fix it first")


def run(mutant: Mutant, timeout: int = 1500) -> Tuple[str, Optional[str], float]:
    with tempfile.TemporaryDirectory(prefix="ldam-mutant-") as dest:
        _copy_tree(dest)
        for module, old, new in ((mutant.module, mutant.old, mutant.new), *mutant.also):
            path = os.path.join(dest, "lightning_ldam", module)
            with open(path) as f:
                source = f.read()
            if source.count(old) != 1:
                raise RuntimeError(f"{mutant.name}: the line to mutate occurs {source.count(old)} times in "
                                   f"{module}, expected once")
            with open(path, "w") as f:
                f.write(source.replace(old, new))
        probe = subprocess.run([sys.executable, "-c", "import lightning_ldam, sys; print(lightning_ldam.__file__)"],
                               cwd=dest, env={**os.environ, "PYTHONPATH": dest}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(dest):
            raise RuntimeError(f"the mutated copy is not the one imported: {probe.stdout} {probe.stderr}")
        killed, test, seconds = _pytest(dest, list(mutant.tests), timeout)
        if not killed:  # its own files missed it: the whole suite gets a chance before it is called a survivor
            killed, test, more = _pytest(dest, ["tests"], timeout)
            seconds += more
        return ("killed" if killed else "SURVIVED"), test, seconds


def table(rows, argv) -> str:
    lines = ["| mutant | the bug | result | first test that fails | s |", "|---|---|---|---|---|"]
    for mutant, (result, test, seconds) in rows:
        where = f"`{test}`" if test else "—"
        lines.append(f"| `{mutant.name}` ({mutant.module}) | {mutant.what} | {result} | {where} | {seconds:.0f} |")
    killed = sum(r == "killed" for _, (r, _, _) in rows)
    from readme_tables import command_line

    command = command_line("mutants.py", argv)
    return "\n".join(lines) + (f"\n\n{killed} of {len(rows)} mutants killed; every group of test files passed "
                                f"unmutated first. Command: `{command}`; {time.strftime('%Y-%m-%d')}, "
                                f"{os.cpu_count()} CPU cores.\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutant names (default: all)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    control(chosen)
    rows = []
    for mutant in chosen:
        rows.append((mutant, run(mutant)))
        result, test, seconds = rows[-1][1]
        print(f"{mutant.name}: {result} ({test}, {seconds:.0f} s)", flush=True)
    text = table(rows, sys.argv[1:] if argv is None else list(argv))
    print(text)
    if args.write:
        from readme_tables import write_section

        write_section(text, "MUTANTS", "Mutation check (`benchmarks/mutants.py`)")
    return 0 if all(r == "killed" for _, (r, _, _) in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
