"""What the callback tells the user about its rounds: one line up front, one when done, warnings once per cause.

A run that repeats a fault every round (a full disk) must not flood its log: :meth:`RoundReporter.warn_once`
keys each message, and a failed round is keyed by its cause (the exception type and errno, else its message).
No Lightning import: the rank-zero ``info``/``warn`` functions are given.
"""
from __future__ import annotations

import errno
from typing import Callable, Dict, Hashable, List, Mapping, Optional, Tuple, cast

from lightning_ldam.sampling.result import SampleResult

__all__ = ["RoundReporter", "NOTES"]

#: The callback's one-off messages: key -> (``"warn"`` or ``"info"``, text with ``str.format`` fields). Each is
#: said at most once per run (:meth:`RoundReporter.once`).
NOTES = {
    "samples_per_plugin": ("info", "LDAMCallback: TensorBoard keeps 10 images per tag by default; to see every round "
                                   "run `tensorboard --logdir <dir> --samples_per_plugin images=1000`"),
    "nonfinite_inputs": ("warn", "LDAMCallback: training inputs with NaN/Inf are not kept for LDAM (this warning "
                                 "shows once; the count goes to ldam/nonfinite_inputs)"),
    "dry_run": ("warn", "LDAMCallback: a two-step trial of LDAM on the first batch failed ({error}); rounds will be "
                        "tried, and skipped if they fail"),
    "empty": ("warn", "LDAMCallback: no usable training batch seen yet, so the input shape/range are unknown; "
                      "skipping this round (pass input_shape and value_range to sample before training)"),
    "budget": ("info", "LDAMCallback: skipping rounds that would take sampling above max_overhead={fraction:g} of the "
                       "training time (first skip at step {step}); the count goes to ldam/skipped_rounds"),
    "png": ("warn", "LDAMCallback: no image-capable logger; writing PNGs under {out}"),
    "order": ("warn", "LDAMCallback: {averager} comes before LDAMCallback in callbacks=[...], so at the end of fit it "
                      "copies its average into the model before the fit-end round: that round will have no 'raw'. "
                      "List LDAMCallback first to log both"),
    "skipped_batch": ("warn", "LDAMCallback: a training batch was not kept for LDAM ({error}); training is "
                              "unaffected (this warning shows once per cause; the count goes to ldam/skipped_batches)"),
    "ema_failed": ("warn", "LDAMCallback: the own EMA could not be updated at step {step} ({error}); the 'ema' variant "
                           "keeps its last weights and training goes on (this warning shows once per cause)"),
    "not_images": ("warn", "LDAMCallback: the inputs have shape {shape}, not images (C, H, W), so no discriminator is "
                           "trained: λ = 0 (disc_weight=0.0 says so and silences this)"),
    "init_data": ("warn", "LDAMCallback: chains started from uniform noise never reach {layers} (the model's forward "
                          "takes another path on such inputs), so chains start from real training inputs instead "
                          "(sampler_kwargs={{'init': 'data'}} says so and silences this)"),
    "model_limit": ("warn", "LDAMCallback: a two-step trial of LDAM on the first batch met a limit of the model, "
                            "not of an argument you set ({error}); training goes on, rounds will be tried and skipped "
                            "if they fail"),
    "unmixed": ("warn", "LDAMCallback: step {step}: the chains of {layer} have not mixed: split R-hat > {bound:g} for "
                        "{bad} of {total} neurons (median {rhat:.2f}; bulk ESS median {ess:.0f} draws), so its samples "
                        "show where each chain sits in its own basin, not draws of the whole law (README: 'Reading "
                        "R-hat and ESS'). Said once per layer; ldam/<variant>/<layer>/rhat and /ess follow it"),
    "foreign_state": ("warn", "LDAMCallback: the checkpoint holds LDAM state under {keys}, not under this callback's "
                              "key {mine} (other neurons, seed, module or schedule), so this callback starts fresh: no "
                              "EMA, reservoir, discriminators or round counts are restored. Resume with the same "
                              "arguments to restore them"),
}


class RoundReporter:
    """Rank-zero messages about rounds.

    Args:
        info: writes an informational line (Lightning's ``rank_zero_info`` in the callback).
        warn: writes a warning (``rank_zero_warn``).
    """

    def __init__(self, info: Callable[[str], None], warn: Callable[[str], None]):
        self.info, self.warn = info, warn
        self._said: set = set()
        self._per_step: Optional[float] = None  # the last round's seconds per variant and step
        self._unhealthy: set = set()  # (kind, layer, index) already reported

    def __getstate__(self):  # the set of messages said belongs to one run; a copy (DDP spawn) starts afresh
        return {**self.__dict__, "_said": set()}

    def warn_once(self, key: Hashable, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.warn(message)

    def info_once(self, key: Hashable, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.info(message)

    def once(self, key: str, cause: Hashable = None, **fields) -> None:
        """Say the message :data:`NOTES` keys as ``key`` (formatted with ``fields``), unless said already; with a
        ``cause``, once per cause (a batch skipped for another reason is said again)."""
        kind, text = NOTES[key]
        said = key if cause is None else (key, cause)
        (self.warn_once if kind == "warn" else self.info_once)(said, text.format(**fields))

    def failure(self, step: int, err: BaseException) -> None:
        """A failed round: a warning naming the cause, once per cause."""
        code = getattr(err, "errno", None)
        cause = (type(err).__name__, errno.errorcode.get(code, code) if code else str(err)[:160])
        self.warn_once(("failed",) + cause, f"LDAMCallback: sampling failed at step {step} and the round was "
                                            f"skipped (training goes on; the next round tries again; the count "
                                            f"goes to ldam/failed_rounds): {type(err).__name__}: {err}")

    def timed(self, per_step: float) -> None:
        """A measured step (seconds per variant and step) to announce the next round's cost from."""
        self._per_step = per_step

    def announce(self, step: int, what: str, variants: int, steps: int) -> None:
        """The round's size and expected cost (from the last round's pace), before it starts: a slow round is
        never a silent one."""
        cost = "the first round: timing it" if self._per_step is None \
            else f"≈ {self._per_step * variants * steps:.0f} s"
        self.info(f"LDAMCallback: step {step}: sampling {what} ({cost})")

    def done(self, step: int, results: Mapping[str, SampleResult], seconds: float) -> None:
        first = next(iter(results.values()))
        n, c = first.activations.shape
        if cast(int, first.config["steps"]) > 0:
            self._per_step = seconds / (len(results) * cast(int, first.config["steps"]))
        self.info(f"LDAMCallback: step {step}: {n} neurons x {c} chains x {first.config['steps']} steps for "
                  f"{', '.join(results)} in {seconds:.1f}s")
        for name, res in results.items():
            resets = int(res.nonfinite_resets.sum())
            if resets:
                self.warn(f"LDAMCallback: {resets} chain states of the {name!r} weights turned NaN/Inf and were "
                          f"re-initialised from fresh starts")

    def health(self, step: int, found: Optional[Dict[str, List[Tuple[str, int]]]]) -> None:
        """One warning line listing the dead, undriven and saturated units that appear for the first time."""
        new = {kind: [u for u in units if (kind, *u) not in self._unhealthy] for kind, units in (found or {}).items()}
        parts = []
        for kind, units in new.items():
            self._unhealthy.update((kind, *u) for u in units)
            by_layer: Dict[str, List[int]] = {}
            for layer, index in units:
                by_layer.setdefault(layer, []).append(index)
            parts += [f"{kind} {layer}:{indices}" for layer, indices in by_layer.items()]
        if parts:
            self.warn(f"LDAMCallback: step {step}: units of the raw weights newly found unhealthy: {'; '.join(parts)} "
                      f"(dead: constant on the real inputs; undriven: lift < 0.5; saturated: NaN/Inf or exploding; "
                      f"counts in ldam/health/<layer>/...)")
