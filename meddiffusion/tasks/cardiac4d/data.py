"""Training data of the 4D cardiac synthesis: simulated short-axis cine studies, cached.

Study ``i`` of dataset ``seed`` is a phantom patient of group ``PRESET_ORDER[i % 5]`` (so any
run of consecutive studies is balanced over NOR, MINF, DCM, HCM and RV), acquired by
``cine.acquire``. A study costs about 2 s, so it is made once into ``cine_NNNN.npz`` in a
cache folder (``training.cache``) that the three training stages and the bench share.

What each stage reads:

- the VAE, single frames (1, depth, H, W) padded to the stack depth with their labels
  (:class:`CineFrames`);
- the anatomy and motion LDMs, the VAE's latents of every frame (:func:`encode_studies`), with
  each study's clinical values **measured on its labels** (``measure.clinical_values``): the
  model is asked for volumes as a reader would measure them on its output, so it learns those;
- the anatomy LDM also, as the paper, resized copies of each end-diastolic stack
  (:func:`affine_copies`), their volumes rescaled with the heart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from meddiffusion.tasks.cardiac4d.cine import PRESET_ORDER, CineProtocol
from meddiffusion.training import cache
from meddiffusion.training.cache import item_seed as study_seed  # the one seed rule of cached datasets

__all__ = ["STEM", "study_seed", "describe", "make_study", "build_cache", "Study", "load_studies",
           "CineFrames", "spacing_of", "encode_studies", "AFFINE_SCALE", "resize_in_plane", "affine_copies",
           "AnatomyLatents", "MotionLatents"]

STEM = "cine"
_REFITS = 20



def describe(index: int, dataset_seed: int, protocol: CineProtocol) -> dict:
    return {"kind": "cardiac4d-cine", "version": 1, "dataset_seed": int(dataset_seed), "index": int(index),
            "protocol": protocol.to_dict()}


def make_study(index: int, dataset_seed: int, protocol: CineProtocol) -> tuple[dict[str, np.ndarray], dict]:
    """One patient: its group from the index, its draw from the seed (redrawn if its heart does not fit the chest)."""
    from meddiffusion.phantoms import Phantom
    from meddiffusion.tasks.cardiac4d.cine import acquire

    preset = PRESET_ORDER[int(index) % len(PRESET_ORDER)]
    seed = study_seed(dataset_seed, index)
    for attempt in range(_REFITS):
        try:
            phantom = Phantom.sample(preset, seed + attempt * 7_919_111)
            break
        except ValueError:
            continue
    else:
        raise RuntimeError(f"no {preset} patient of seed {seed} fits its chest after {_REFITS} draws")
    study = acquire(phantom, protocol, seed)
    grid = study.grid
    arrays = {"images": study.images.astype(np.float16), "labels": study.labels, "tau": study.tau,
              "times_ms": study.times_ms, "spacing": np.asarray(grid.spacing), "origin": np.asarray(grid.origin),
              "direction": np.asarray(grid.direction)}
    return arrays, {**study.info, "attempt": attempt}


def build_cache(folder: str | Path, indices, dataset_seed: int, protocol: CineProtocol,
                callback: Callable[[int, int], None] | None = None) -> list[Path]:
    """Make the studies ``indices`` of dataset ``dataset_seed`` that ``folder`` lacks; return all their paths."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return cache.build_cache(folder, STEM, indices, lambda i: describe(i, dataset_seed, protocol),
                             lambda i: make_study(i, dataset_seed, protocol), callback)


class Study:
    """A cached study in memory: images (F, S, H, W) float16 in [-1, 1], labels uint8, τ, geometry, group and clinical
    values."""

    def __init__(self, path: str | Path):
        from meddiffusion.tasks.cardiac4d.measure import clinical_values

        images, labels, tau, spacing, origin, direction = cache.read_item(
            path, "images", "labels", "tau", "spacing", "origin", "direction")
        self.path = Path(path)
        self.images = images  # float16 as stored: a 400-study dataset is then 2 GB, not 4
        self.labels = labels
        self.tau = tau.astype(np.float32)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        self.direction = tuple(float(d) for d in direction)
        self.info = cache.read_meta(path)[1]
        self.preset = self.info["preset"]
        self.values = clinical_values(labels, self.spacing)

    @property
    def slices(self) -> int:
        return int(self.images.shape[1])


def load_studies(paths) -> list[Study]:
    return [Study(p) for p in paths]


def spacing_of(studies: list[Study]) -> tuple[float, float, float]:
    """The one voxel size of the studies (a model learns one grid); a ValueError if they differ."""
    found = {s.spacing for s in studies}
    if len(found) != 1:
        raise ValueError(f"the studies are on different voxel sizes {sorted(found)}; one model learns one grid")
    return found.pop()


class CineFrames:
    """Every frame of the studies as a VAE sample: ``{"image": (1, D, H, W), "labels": (D, H, W), "labelled": ()}``.

    Frames are held padded to the depth (−1 = air in the image, 0 = background in the labels).
    The phantom labels every frame, so every sample is labelled; ``labelled`` lets a dataset of
    partly labelled cines (the paper labels only ED and ES) train the same loss.
    """

    def __init__(self, studies: list[Study], depth: int):
        import torch

        from meddiffusion.nets.cardiac4d import pad_slices

        count = sum(len(s.images) for s in studies)
        h, w = studies[0].images.shape[-2:]
        self.images = torch.full((count, depth, h, w), -1.0, dtype=torch.float16)
        self.labels = torch.zeros((count, depth, h, w), dtype=torch.uint8)
        start = 0
        for s in studies:  # filled in place: no second copy of the dataset while it is built
            stop = start + len(s.images)
            self.images[start:stop] = torch.from_numpy(pad_slices(s.images, depth, -1.0))
            self.labels[start:stop] = torch.from_numpy(pad_slices(s.labels, depth, 0))
            start = stop
        self.study = np.concatenate([np.full(len(s.images), k) for k, s in enumerate(studies)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        import torch

        return {"image": self.images[index, None].float(), "labels": self.labels[index].long(),
                "labelled": torch.tensor(True)}


def encode_studies(vae, studies: list[Study], depth: int, device, batch: int = 8,
                   callback: Callable[[], None] | None = None) -> list[np.ndarray]:
    """The VAE's mean latent of every frame of every study: one (F, C, depth, h, w) float32 array per study;
    ``callback()`` after each study (a training set takes tens of CPU minutes)."""
    import torch

    from meddiffusion.nets.cardiac4d import pad_slices

    out = []
    with torch.inference_mode():
        for study in studies:
            x = torch.from_numpy(pad_slices(study.images, depth, -1.0)).float()[:, None]
            mus = [vae.encode(x[i : i + batch].to(device))[0].float().cpu() for i in range(0, len(x), batch)]
            out.append(torch.cat(mus).numpy())
            if callback is not None:
                callback()
    return out


#: the paper's in-plane scale range of its anatomy copies (±9 %); its ±5 % through-plane is left
#: out, since a stack of 10 mm slices cannot be stretched by half a slice without changing the
#: slice count the model is conditioned on
AFFINE_SCALE = 0.09


def resize_in_plane(images: np.ndarray, labels: np.ndarray, scale_yx) -> tuple[np.ndarray, np.ndarray]:
    """A stack (S, H, W) and its labels resized in-plane about the image centre by ``scale_yx`` (same size:
    cropped, or padded with the edge for the image and background for the labels; MONAI ``Zoom``)."""
    from monai.transforms import Zoom

    image = Zoom(tuple(scale_yx), mode="bilinear", padding_mode="edge", align_corners=False)(images.astype(np.float32))
    label = Zoom(tuple(scale_yx), mode="nearest", padding_mode="constant")(labels.astype(np.float32))
    return np.asarray(image, np.float32), np.rint(np.asarray(label)).astype(np.uint8)


def affine_copies(studies: list[Study], vae, depth: int, copies: int, seed: int, device,
                  callback: Callable[[], None] | None = None) -> list[tuple[np.ndarray, dict]]:
    """``copies`` resized versions of each study's end-diastolic stack, as (mean latent (C, depth, h, w), values).

    The paper's anatomy augmentation: each copy is scaled in-plane by a factor per axis drawn in
    1 ± ``AFFINE_SCALE`` (seeded by ``seed``, the study and the copy), encoded by ``vae``, and its
    EDV and ESV multiplied by the ratio of the LV volumes of the resized and the original ED
    labels (EF unchanged). Rarer sizes, dilated hearts above all, are then seen more often.
    """
    import torch

    from meddiffusion.nets.cardiac4d import LABELS, pad_slices

    lv = LABELS.index("LV")
    out = []
    with torch.inference_mode():
        for index, study in enumerate(studies):
            images, labels = study.images[0].astype(np.float32), study.labels[0]
            stacks, values = [], []
            for copy in range(copies):
                rng = np.random.default_rng([int(seed), index, copy, 11])
                scale = 1.0 + rng.uniform(-AFFINE_SCALE, AFFINE_SCALE, 2)
                image, label = resize_in_plane(images, labels, scale)
                ratio = float((label == lv).sum()) / max(float((labels == lv).sum()), 1.0)
                v = dict(study.values)
                v["lv_edv_ml"], v["lv_esv_ml"] = v["lv_edv_ml"] * ratio, v["lv_esv_ml"] * ratio
                stacks.append(pad_slices(image, depth, -1.0)), values.append(v)
            x = torch.from_numpy(np.stack(stacks))[:, None].to(device)
            mus = vae.encode(x)[0].float().cpu().numpy()
            out.extend(zip(mus, values))
            if callback is not None:
                callback()
    return out


def _condition(study: Study, depth: int, h: int, w: int, values: dict | None = None) -> dict:
    """The clinical condition of a study as the LDMs read it: group id, measured EF/EDV/ESV (or ``values``) and
    slices, mask."""
    import torch

    from meddiffusion.nets.cardiac4d import clinical_scalars, slice_mask
    from meddiffusion.tasks.cardiac4d.clinical import DIAGNOSIS_IDS

    v = values or study.values
    return {"diagnosis": torch.tensor(DIAGNOSIS_IDS[study.preset]),
            "scalars": clinical_scalars(v["lv_ef_percent"], v["lv_edv_ml"], v["lv_esv_ml"], study.slices)
            .reshape(4).float(),
            "mask": slice_mask(study.slices, depth, h, w)[0]}


class AnatomyLatents:
    """The end-diastolic latent of each study (frame 0, the R-wave trigger) times the latent scale, with its condition;
    then the study's resized copies (:func:`affine_copies`, ``copies`` per study, in study order), if given."""

    def __init__(self, studies: list[Study], latents: list[np.ndarray], latent_scale: float,
                 copies: list[tuple[np.ndarray, dict]] = ()):
        import torch

        per_study = len(copies) // len(studies)
        if len(copies) != per_study * len(studies):
            raise ValueError(f"{len(copies)} copies do not divide among {len(studies)} studies")
        z = [z[0] for z in latents] + [mu for mu, _ in copies]
        self.z = torch.from_numpy(np.stack(z) * latent_scale).float()
        depth, h, w = self.z.shape[-3:]
        self.cond = [_condition(s, depth, h, w) for s in studies]
        self.cond += [_condition(studies[k // per_study], depth, h, w, values) for k, (_, values) in enumerate(copies)]

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, index: int) -> dict:
        return {"z": self.z[index], **self.cond[index]}


class MotionLatents:
    """Every frame of every study: Δz = z_t − z_ED (times latent and motion scales), z_ED, phase τ, condition."""

    def __init__(self, studies: list[Study], latents: list[np.ndarray], latent_scale: float, motion_scale: float):
        import torch

        self.z = [torch.from_numpy(z * latent_scale).float() for z in latents]
        self.tau = [torch.from_numpy(s.tau).float() for s in studies]
        self.motion_scale = float(motion_scale)
        depth, h, w = self.z[0].shape[-3:]
        self.cond = [_condition(s, depth, h, w) for s in studies]
        self.index = [(k, f) for k, z in enumerate(self.z) for f in range(len(z))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        k, f = self.index[index]
        z = self.z[k]
        return {"dz": (z[f] - z[0]) * self.motion_scale, "z_ed": z[0], "tau": self.tau[k][f], **self.cond[k]}


def motion_std(latents: list[np.ndarray], latent_scale: float) -> float:
    """std of the scaled Δz over every frame (ED frames, Δz = 0, left out): 1 / the motion scale."""
    values = np.concatenate([((z[1:] - z[:1]) * latent_scale).ravel() for z in latents])
    return float(values.std())
