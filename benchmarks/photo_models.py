"""Patches of real photographs (scikit-image's bundled colour photos, offline): a patch's class is its photograph.

Each photograph is scaled to :data:`PHOTO_HEIGHT` patch sides (128 rows for 32-px patches) and cut into three
disjoint vertical bands: the target's training patches come from the left band, the judge's from the middle one,
the held-out patches from the right one, so no pixel of a held-out patch was seen in training by either network.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

#: scikit-image's bundled colour photographs used as classes (``skimage.data`` loaders, no download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "retina",
          "immunohistochemistry")
#: rows of each photograph after scaling, in patch sides (a patch covers a quarter of its height).
PHOTO_HEIGHT = 4
#: the bands' shares of each photograph's width: target, judge, held out.
BANDS = (0.4, 0.3, 0.3)


def _photo(name: str, height: int) -> torch.Tensor:
    import skimage.data as data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    x = torch.as_tensor(img[..., :3]).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    width = round(x.shape[-1] * height / x.shape[-2])
    return F.interpolate(x, size=(height, width), mode="area")[0]


def _patches(band: torch.Tensor, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    h, w = band.shape[-2:]
    top = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    left = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return torch.stack([band[:, t:t + size, s:s + size] for t, s in zip(top, left)])


#: ITU-R BT.601 luma weights: ``gray=True`` patches are this weighted sum of the colour ones.
LUMA = (0.299, 0.587, 0.114)


def load_photo_splits(seed: int = 0, size: int = 32, per_class: Dict[str, int] = None,
                      gray: bool = False) -> Dict[str, torch.Tensor]:
    """``target_x``/``judge_x``/``held_x`` (``[N, 3, size, size]`` in [0, 1], or ``[N, 1, size, size]`` luma with
    ``gray``; the same crops either way) with labels, and the target's per-channel ``mean``/``std``. Random crops
    (and horizontal flips for the training parts) from each band."""
    per_class = per_class or {"target": 300, "judge": 300, "held": 60}
    gen = torch.Generator().manual_seed(seed)
    parts: Dict[str, List[torch.Tensor]] = {k: [] for k in per_class}
    labels: Dict[str, List[torch.Tensor]] = {k: [] for k in per_class}
    for label, name in enumerate(PHOTOS):
        x = _photo(name, PHOTO_HEIGHT * size)
        w = x.shape[-1]
        cuts = [0, round(BANDS[0] * w), round((BANDS[0] + BANDS[1]) * w), w]
        for i, part in enumerate(per_class):
            p = _patches(x[..., cuts[i]:cuts[i + 1]], per_class[part], size, gen)
            if part != "held":
                flip = torch.rand(len(p), generator=gen) < 0.5
                p[flip] = p[flip].flip(-1)
            parts[part].append(p)
            labels[part].append(torch.full((len(p),), label, dtype=torch.long))
    out = {}
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    for part in per_class:
        out[f"{part}_x"], out[f"{part}_y"] = torch.cat(parts[part]), torch.cat(labels[part])
        if gray:
            out[f"{part}_x"] = (out[f"{part}_x"] * luma).sum(1, keepdim=True)
    out["mean"] = out["target_x"].mean(dim=(0, 2, 3))
    out["std"] = out["target_x"].std(dim=(0, 2, 3))
    return out
