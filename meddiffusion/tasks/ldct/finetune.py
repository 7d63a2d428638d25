"""Fine-tuning the LDCT model on the user's own CT: paired, clean-only and low-dose-only folders.

``meddiff train ldct --source paired-folder|clean-folder|lowdose-folder --data DIR`` reads the
volumes with :mod:`meddiffusion.training.userdata` (pair checks, by-patient split) into the
training cache, one item per volume (int16 HU, so every slice keeps its true neighbours):

- **paired**: the user's low-dose input and normal-dose target;
- **clean**: normal-dose volumes made into pairs at ``--dose`` by the task's physics, I0
  calibrated on each volume's own noise (``physics.simulate_volume``), as the bench does;
- **low-dose only**: a self-supervised fine-tune (:class:`NeighbourPairs`,
  :func:`make_self_supervised_loss`).

Why neighbouring slices and not Neighbor2Neighbor's in-plane sub-sampling: a CT's noise is
correlated within a slice by the reconstruction kernel, so two in-plane sub-images of one
slice share part of their noise and a network trained to map one to the other learns to keep
it; sub-sampling also halves the pixel size the network sees, changing the noise texture a
fine-tune is meant to adapt to. Noise in *different* slices comes from different projections
and is independent (for slices that do not overlap), as Noise2Sim uses. So the volume is
sub-sampled along z instead, N2N's rule that input and target come from disjoint sub-images:
slice j with its context j-2, j+2 is the input and the mean of slices j-1 and j+1 the target.
The target's noise is independent of everything the network sees, so the loss is, up to a
constant, the error against the clean mean of the neighbours (Noise2Noise); the cost is a
little blur along z and a context twice as far as at inference, as N2N's half resolution.

CoreDiff's diffusion blends the target into its input (x_t = a x0 + (1 - a) x_T), which would
feed the target's noise to the network; the self-supervised loss therefore blends the
network's own detached estimate from the low-dose image instead, as the sampler does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from meddiffusion.diffusion.meanpreserving import MeanPreservingDiffusion
from meddiffusion.io import Volume
from meddiffusion.metrics.image import image_quality
from meddiffusion.tasks.ldct.data import LDCTPairs, pad_slices, plain_mse, training_crops
from meddiffusion.tasks.ldct.infer import body_box, denoise_volume
from meddiffusion.tasks.ldct.model import HU_RANGE, build_model, worst_if_diverged
from meddiffusion.training import cache, userdata
from meddiffusion.training.recipe import CLEAN_FOLDER, LOWDOSE_FOLDER, PAIRED_FOLDER, Score, TrainingData
from meddiffusion.training.sampler import STREAM_DATA, derive_seed
from meddiffusion.training.storage import hu_to_int16

__all__ = ["build_user_data", "NeighbourPairs", "make_self_supervised_loss", "score", "preview",
           "slice_noise_correlation"]

STEMS = {PAIRED_FOLDER: "pair", CLEAN_FOLDER: "clean", LOWDOSE_FOLDER: "lowdose"}
#: adjacent slices whose fine-scale residuals correlate more than this probably overlap (shared noise)
OVERLAP_CORRELATION = 0.3


def build_user_data(args, progress) -> TrainingData:
    """The cached training and validation volumes of ``--data``, split by patient; provenance in ``info``."""
    if not args.data:
        raise ValueError(f"--source {args.source} needs --data: a folder or a CSV manifest of the volumes")
    entries = userdata.list_entries(args.data, args.source)
    patients = sorted({entry.patient for entry in entries})
    single = len(patients) == 1  # a fine-tune on one scan: held-out slices validate (userdata.split_slices)
    train_ids, val_ids = (patients, patients) if single else userdata.split_patients(patients, args.val_patients,
                                                                                      args.seed)
    hashes = {path: userdata.file_sha256(path) for entry in entries for path in entry.files}
    lowdose = args.source == LOWDOSE_FOLDER

    def describe(index: int) -> dict:
        entry = entries[index]
        meta = {"source": args.source, "name": entry.name, "patient": entry.patient,
                "sha256": [hashes[path] for path in entry.files]}
        return meta | ({"dose": args.dose, "seed": args.seed} if args.source == CLEAN_FOLDER else {})

    def make(index: int):
        low, normal, info = userdata.read_checked(entries[index], "ct")
        if args.source == CLEAN_FOLDER:
            from meddiffusion.tasks.ldct.physics import simulate_volume

            low, info["i0"] = simulate_volume(normal, args.dose, seed=derive_seed(args.seed, STREAM_DATA, index))
        if lowdose:
            if low.shape[0] < 3:
                raise ValueError(f"'{entries[index].name}' has {low.shape[0]} slices; a self-supervised fine-tune "
                                 "pairs each slice with its two neighbours and needs at least 3")
            info["slice_noise_correlation"] = slice_noise_correlation(low.array)
        arrays = {"ld": hu_to_int16(low.array)} | ({} if normal is None else {"nd": hu_to_int16(normal.array)})
        return arrays, info

    folder = Path(args.out) / "data"
    paths = cache.build_cache(folder, STEMS[args.source], range(len(entries)), describe, make,
                              progress.callback("read", len(entries)))
    infos = [cache.read_meta(path)[1] for path in paths]
    overlapping = [e.name for e, i in zip(entries, infos) if i.get("slice_noise_correlation", 0) > OVERLAP_CORRELATION]
    if overlapping:
        progress.log(f"warning: the noise of adjacent slices correlates in {', '.join(overlapping)}: overlapping "
                     "slices share noise, which a self-supervised fine-tune learns to keep")

    dataset = NeighbourPairs if lowdose else LDCTPairs
    split = {"train": train_ids, "val": val_ids}
    if single:
        train_paths, val_paths, blocks = _slice_blocks(folder, STEMS[args.source], paths, entries, args.val_patients)
        split |= {"by": "slices", "slices": blocks, "gap": userdata.SLICE_GAP,
                  "note": "validation on held-out slices of the only patient"}
    else:
        train_paths = userdata.by_patient(paths, entries, train_ids)
        val_paths = userdata.by_patient(paths, entries, val_ids)
    data = TrainingData(dataset(train_paths), dataset(val_paths))
    data.info["provenance"] = userdata.provenance(args, entries, hashes, split)
    if single:
        progress.log(f"one patient ({patients[0]}): {len(data.train)} training slices, and {len(data.val)} "
                     f"validation slices held out at the end of each volume, {userdata.SLICE_GAP} slices away "
                     f"(it scores adaptation to this scan, not other patients) from {args.data} in {folder}")
    else:
        progress.log(f"{len(data.train)} training slices of {len(train_ids)} patients and {len(data.val)} validation "
                     f"slices of {len(val_ids)} ({', '.join(val_ids)}) from {args.data} in {folder}")
    return data


def _slice_blocks(folder: Path, stem: str, paths: list[Path], entries, val: float | None):
    """The training and validation blocks of each cached volume of the only patient, as cache items of their own."""
    train, held_out, blocks = [], [], {}
    for index, (path, entry) in enumerate(zip(paths, entries)):
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in ("ld", "nd") if key in stored.files}
        ranges = userdata.split_slices(arrays["ld"].shape[0], val, entry.name)
        of = cache.read_meta(path)[0]
        for side, block, found in (("train", ranges[0], train), ("val", ranges[1], held_out)):
            cut = {key: array[block.start : block.stop] for key, array in arrays.items()}
            found += cache.build_cache(folder, f"{stem}-{side}", [index],
                                       lambda _, b=block: {"of": of, "slices": [b.start, b.stop]},
                                       lambda _, c=cut: (c, {}))
        blocks[entry.name] = {"train": [ranges[0].start, ranges[0].stop], "val": [ranges[1].start, ranges[1].stop]}
    return train, held_out, blocks


def slice_noise_correlation(volume_hu: np.ndarray) -> float:
    """Correlation of the fine-scale residuals of the two middle slices over soft tissue (0 for independent noise)."""
    middle = volume_hu.shape[0] // 2
    a, b = (volume_hu[k].astype(np.float64) for k in (middle - 1, middle))
    residuals = [x - ndimage.uniform_filter(x, 3) for x in (a, b)]
    tissue = (np.abs(ndimage.uniform_filter(a, 5)) < 300) & (np.abs(ndimage.uniform_filter(b, 5)) < 300)
    if tissue.sum() < 64:
        return 0.0
    x, y = (r[tissue] - r[tissue].mean() for r in residuals)
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-12))


class NeighbourPairs(Dataset):
    """Self-supervised items of low-dose volumes: input [j-2, j, j+2], target the mean of slices j-1 and j+1.

    Slices 1 .. n-2 of each volume are centres; j-2 / j+2 outside the volume replicate the
    centre, as at inference. Items are float32 HU shaped like :class:`LDCTPairs`' (``ld``,
    ``nd``, ``box``), so the crops and the sampler see the same layout.
    """

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise ValueError("no low-dose volumes given")
        arrays = [cache.read_item(path, "ld")[0] for path in paths]
        shape = tuple(max(ld.shape[k] for ld in arrays) for k in (1, 2))
        self.slabs = [(None, ld) for ld in pad_slices(arrays, shape)]
        self.items = [(v, j, body_box(ld[j - 1 : j + 2].astype(np.float32), margin=0, multiple=1))
                      for v, (_, ld) in enumerate(self.slabs) for j in range(1, ld.shape[0] - 1)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        v, j, box = self.items[index]
        ld = self.slabs[v][1]
        above, below = (j - 2 if j >= 2 else j), (j + 2 if j + 2 < ld.shape[0] else j)
        target = (ld[j - 1].astype(np.float32) + ld[j + 1]) / 2
        return {"ld": torch.from_numpy(ld[[above, j, below]].astype(np.float32)),
                "nd": torch.from_numpy(target[None]), "box": torch.tensor(box or (0, ld.shape[1], 0, ld.shape[2]))}


def make_self_supervised_loss(diffusion: MeanPreservingDiffusion, crop: int, replicate_share: float = 0.25):
    """CoreDiff's two-stage loss against a noisy target, x_t blended from the network's own detached estimate.

    x0_proxy = f(x_T, T-1) (no gradient) replaces the target in x_t = D(x0, x_T, t), so nothing
    the network sees depends on the target's noise; both stages are scored against the target.
    """

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator):
        model_fn, centre, context, target = training_crops(model, batch, crop, generator, replicate_share)
        last = torch.full((centre.shape[0],), diffusion.num_timesteps - 1, dtype=torch.long, device=centre.device)
        with torch.no_grad():
            proxy = model_fn(centre, last, context, None)
        t = diffusion.random_timestep(generator)
        _, x0_hat, x0_hat2 = diffusion.two_stage_loss(model_fn, proxy, centre, t, context=context)
        loss = 0.5 * plain_mse(x0_hat, target) + 0.5 * plain_mse(x0_hat2, target)
        return loss, {"rmse_hu": ((x0_hat2.detach() - target) * HU_RANGE).pow(2).mean().sqrt()}

    return loss_fn


def score(args, net, data: TrainingData, device) -> Score:
    """The network as ``ldct-denoise`` runs it on the validation volumes.

    Pairs: PSNR (the gate's metric), SSIM and RMSE against the targets. Low-dose only: the RMSE
    of each half-volume (even, odd slices) against the mean of the slices between, whose noise
    is independent; it is not conclusive, because the anatomy of neighbouring slices differs
    too (50-100 HU RMSE on the phantom cases of ``finetune_bench``, where it passed a fine-tune
    that lost 3 dB), so the gate registers such a model only with ``--register-anyway``.
    """
    model = _inference_model(args, net, device)

    def denoise(array: np.ndarray) -> np.ndarray:  # a diverged network scores as the worst image, not an error
        out = denoise_volume(Volume(array, modality="CT"), model, device=device).array
        return worst_if_diverged(out)
    totals, count = {}, 0
    for nd, ld in data.val.slabs:
        volume = ld.astype(np.float32)
        if nd is None:
            denoised, targets = [], []
            for parity in (0, 1):
                half = denoise(volume[parity::2])
                inner = [(i, parity + 2 * i) for i in range(half.shape[0]) if 1 <= parity + 2 * i < ld.shape[0] - 1]
                denoised += [half[i] for i, _ in inner]
                targets += [(ld[j - 1].astype(np.float32) + ld[j + 1]) / 2 for _, j in inner]
            values = {"neighbour_rmse_hu": image_quality(np.stack(denoised), np.stack(targets))["rmse_hu"]}
            weight = len(denoised)
        else:
            values = image_quality(denoise(volume), nd.astype(np.float32))
            values.pop("slices")
            weight = ld.shape[0]
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + value * weight
        count += weight
    values = {name: total / count for name, total in totals.items()}
    if "psnr" in values:
        return Score(values, "psnr")
    return Score(values, "neighbour_rmse_hu", higher_is_better=False, conclusive=False)  # see the docstring


def _inference_model(args, net, device):
    """An :class:`LDCTModel` as ``ldct-denoise`` loads it, on a copy of ``net``'s weights (training goes on)."""
    from meddiffusion.tasks.ldct.recipe import architecture

    state = {name: value.detach().cpu().clone() for name, value in net.state_dict().items()}
    model = build_model(architecture(args), state)
    model.net.to(device)
    return model


def preview(args, net, data: TrainingData, device) -> tuple[Volume, Volume, Volume | None]:
    """The middle slice of the first validation volume: low dose, denoised by ``net`` as ``ldct-denoise`` would
    (with its two neighbours as context), and the normal dose (None for low-dose-only data)."""
    nd, ld = data.val.slabs[0]
    k = ld.shape[0] // 2
    context = ld[max(k - 1, 0) : k + 2].astype(np.float32)
    centre = min(k, 1)
    denoised = denoise_volume(Volume(context, modality="CT"), _inference_model(args, net, device), device=device,
                              batch_size=len(context)).array[centre : centre + 1]
    reference = None if nd is None else Volume(nd[k : k + 1].astype(np.float32), modality="CT")
    return Volume(context[centre : centre + 1], modality="CT"), Volume(denoised, modality="CT"), reference
