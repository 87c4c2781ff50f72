"""What a ``sample()`` call asked for, for spies on it."""
from __future__ import annotations

from typing import Dict


def sample_settings(kwargs: Dict) -> Dict:
    """What a ``sample()`` call's keywords amount to: every setting by name (its ``config=`` with the keywords over
    it), plus the call's other keywords: for spies on ``sample`` that check what a round asked for."""
    from lightning_ldam.sampling.config import SamplerConfig

    names = SamplerConfig.setting_names()
    config = (kwargs.get("config") or SamplerConfig()).with_settings(**{k: v for k, v in kwargs.items() if k in names})
    return {**kwargs, **config.settings()}
