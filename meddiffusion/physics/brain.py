"""Brain PET/MR subjects made from the MNI152 template: real anatomy, many shapes.

nilearn ships the ICBM 2009a MNI152 template (1 mm T1 and grey/white-matter probability maps,
skull-stripped) inside its wheel, so no download is needed.  A subject is the template warped
by a random affine (±10° about each axis, ±8 % scale per axis, ±8 mm shift) and a smooth
elastic displacement (a few mm, ~40 mm correlation), sampled with trilinear interpolation
onto the PET grid, where:

- tissue fractions: grey and white matter from the template, CSF = the brain outline (the
  template's GM + WM closed over sulci, holes filled: ventricles) minus GM and WM, and outside
  the brain a CSF/meningeal layer (1-3 mm), the skull (5-8 mm) and the scalp (4-7 mm), by
  distance from the brain outline (thicknesses drawn per subject);
- FDG SUV (g/ml): grey matter 8-10 and white matter a quarter of it (GM/WM 3.6-4.4, the
  usual ratio of FDG brain PET at 45-60 min p.i.), CSF 0.3, skull 0.4, scalp 0.8, with a
  smooth regional variation of ±10 % in grey and ±5 % in white matter;
- lesions: 2-5 ellipsoids of 4-20 mm, hypermetabolic (uniform, 1.5-3 × the local SUV, e.g.
  tumour) or hypometabolic (0.3-0.7 ×, in cortex, e.g. an epileptogenic focus or a
  neurodegenerative deficit); half are visible on the MR (T1 hypointense);
- μ at 511 keV: soft tissue, CSF and brain 0.096/cm, skull 0.150/cm (``tissues.mu_from_hu``
  at 1100 HU, a cortical/diploic mix), air 0;
- T1 MR: the template's T1 intensity (WM bright, GM grey, CSF dark), a dark skull and a bright
  scalp (fat), visible lesions 10-30 % darker, times a smooth multiplicative bias field (±5-20 %) with Rician noise (1-3 % of
  white matter).

The template's NIfTI axes are RAS; the subject's grid is LPS (``meddiffusion.io.Volume``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from meddiffusion.phantoms.grid import Grid
from meddiffusion.phantoms.tissues import MU_WATER, mu_from_hu
from meddiffusion.physics.pet import Anatomy, PetProtocol, add_background_region, add_lesions

__all__ = ["template_files", "load_template", "BrainAnatomy", "brain_anatomy", "brain_subject", "SUV", "MU"]

#: typical FDG SUV at 45-60 min (grey matter drawn per subject in the range, WM = GM / ratio)
SUV = {"gm": (8.0, 10.0), "gm_wm_ratio": (3.6, 4.4), "csf": 0.3, "bone": 0.4, "scalp": 0.8}
#: 511 keV attenuation, 1/cm
MU = {"soft": MU_WATER[511], "bone": mu_from_hu(1100.0, 511)}
#: T1 intensity of the tissues the skull-stripped template does not have (its WM ≈ 0.87, CSF ≈ 0)
T1_OUTSIDE = {"bone": 0.05, "scalp": 0.75}
#: the MNI brain's centre (RAS mm): the subject's grid is centred on it
BRAIN_CENTRE_RAS = (0.0, -18.0, 18.0)
_PAD_MM = 24


def template_files() -> dict[str, str]:
    """Paths of the template's T1, GM and WM NIfTI files inside the installed nilearn package."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the brain PET subjects need nilearn (pip install nilearn): it ships the MNI152 template")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    names = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
             "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
             "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
    files = {k: data / v for k, v in names.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"the MNI152 template is missing from nilearn: {', '.join(missing)}")
    return {k: str(v) for k, v in files.items()}


@dataclass(frozen=True)
class Template:
    """The template's maps at ``voxel_mm``: channels (t1, gm, wm, csf, distance outside the brain in mm)
    as a (1, 5, z, y, x) tensor, and the RAS position of voxel (0, 0, 0)."""

    maps: torch.Tensor
    origin_ras: tuple[float, float, float]
    voxel_mm: float


@lru_cache(maxsize=2)
def load_template(voxel_mm: float = 2.0) -> Template:
    """The MNI152 maps averaged to ``voxel_mm`` (partial volume), padded for the skull and scalp.

    Derived once per process (about 1 s): the brain outline, CSF and the distance map.
    """
    import nibabel as nib
    from scipy.ndimage import binary_closing, binary_fill_holes, distance_transform_edt, gaussian_filter

    files = template_files()
    arrays = {}
    for key, path in files.items():
        image = nib.load(path)
        if not np.allclose(image.affine[:3, :3], np.eye(3)):
            raise RuntimeError(f"unexpected MNI152 template orientation in {path}")
        origin = image.affine[:3, 3]
        data = np.asarray(image.dataobj, dtype=np.float32)
        arrays[key] = np.transpose(data / max(float(data.max()), 1e-6), (2, 1, 0))   # (k, j, i) = (z, y, x) RAS
    factor = max(1, int(round(voxel_mm)))
    pad = _PAD_MM
    stack = torch.from_numpy(np.stack([arrays["t1"], arrays["gm"], arrays["wm"]]))[None]
    extra = [(-s) % factor for s in stack.shape[2:]]
    stack = F.pad(stack, (pad, pad + extra[2], pad, pad + extra[1], pad, pad + extra[0]))
    stack = F.avg_pool3d(stack, factor)[0].numpy()
    t1, gm, wm = stack
    mm = float(factor)
    brain = binary_closing(gm + wm > 0.3, iterations=2)
    brain = np.stack([binary_fill_holes(s) for s in binary_fill_holes(brain)])
    outline = gaussian_filter(brain.astype(np.float32), 0.5)
    csf = np.clip(np.maximum(outline, gm + wm) - gm - wm, 0.0, 1.0)
    distance = distance_transform_edt(~brain, sampling=mm).astype(np.float32)
    maps = torch.from_numpy(np.stack([t1, gm, wm, csf, distance]).astype(np.float32))[None]
    start = origin - pad + (factor - 1) / 2.0
    return Template(maps.contiguous(), tuple(float(v) for v in start), mm)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.radians(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_field(shape: tuple[int, ...], voxel_mm: float, scale_mm: float, generator: torch.Generator,
                 channels: int = 1) -> torch.Tensor:
    """Unit-amplitude smooth random field(s) (channels, z, y, x): normal noise on a ``scale_mm`` lattice,
    upsampled with cubic-like smoothness (trilinear of a Gaussian-smoothed lattice)."""
    coarse = [max(2, int(math.ceil(s * voxel_mm / scale_mm)) + 2) for s in shape]
    noise = torch.randn([1, channels] + coarse, generator=generator)
    noise = F.avg_pool3d(F.pad(noise, (1, 1, 1, 1, 1, 1), mode="replicate"), 3, stride=1)
    field = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)[0]
    return field / field.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None, None]


def subject_grid(protocol: PetProtocol) -> Grid:
    """The PET/MR grid (LPS), centred on the brain."""
    n, d = protocol.matrix, protocol.voxel_mm
    centre = (-BRAIN_CENTRE_RAS[0], -BRAIN_CENTRE_RAS[1], BRAIN_CENTRE_RAS[2])
    return Grid.centred((n, n, protocol.slices), (d, d, d), centre)


@dataclass
class BrainAnatomy:
    """Tissue fractions (z, y, x) of one subject on ``grid`` and the warped template T1."""

    grid: Grid
    fractions: dict[str, np.ndarray]
    t1: np.ndarray
    params: dict


def brain_anatomy(seed: int, protocol: PetProtocol = PetProtocol()) -> BrainAnatomy:
    """The template warped by the seed's affine and elastic deformation onto the protocol's grid."""
    rng = np.random.default_rng([int(seed), 41])
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    template = load_template(protocol.voxel_mm)
    grid = subject_grid(protocol)
    rotation = _rotation(rng, 10.0)
    scale = rng.uniform(0.92, 1.08, 3)
    shift = rng.uniform(-8.0, 8.0, 3)
    elastic_mm = float(rng.uniform(1.5, 4.0))
    layers = {"csf": float(rng.uniform(1.0, 3.0)), "bone": float(rng.uniform(5.0, 8.0)),
              "scalp": float(rng.uniform(4.0, 7.0))}
    # output voxel (LPS) -> elastic -> inverse affine about the grid centre -> template RAS
    z, y, x = grid.shape
    ii, jj, kk = torch.meshgrid(torch.arange(x, dtype=torch.float64), torch.arange(y, dtype=torch.float64),
                                torch.arange(z, dtype=torch.float64), indexing="xy")
    ijk = torch.stack([ii, jj, kk], -1).permute(2, 0, 1, 3)             # (z, y, x, 3) as (i, j, k)
    world = torch.as_tensor(grid.origin, dtype=torch.float64) + ijk @ torch.as_tensor(grid.matrix).T
    displacement = smooth_field(grid.shape, protocol.voxel_mm, 40.0, gen, channels=3).permute(1, 2, 3, 0)
    world = world + elastic_mm * displacement.double()
    centre = torch.as_tensor(grid.centre, dtype=torch.float64)
    inverse = torch.as_tensor(np.linalg.inv(rotation * scale[None, :]), dtype=torch.float64)
    lps = (world - centre - torch.as_tensor(shift)) @ inverse.T + centre
    ras = lps * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)
    size = torch.tensor(template.maps.shape[2:][::-1], dtype=torch.float64)     # (x, y, z)
    index = (ras - torch.as_tensor(template.origin_ras, dtype=torch.float64)) / template.voxel_mm
    normalised = (2.0 * index / (size - 1) - 1.0).to(torch.float32)[None]
    sampled = F.grid_sample(template.maps, normalised, mode="bilinear", padding_mode="border",
                            align_corners=True)[0].numpy()
    t1, gm, wm, csf, distance = sampled
    gm, wm, csf = (np.clip(a, 0.0, 1.0) for a in (gm, wm, csf))
    outside = np.clip(1.0 - gm - wm - csf, 0.0, 1.0)
    voxel = protocol.voxel_mm

    def within(mm: float) -> np.ndarray:          # fraction of the voxel within ``mm`` of the brain
        return np.clip((mm - distance) / voxel + 0.5, 0.0, 1.0)

    edges = np.cumsum([layers["csf"], layers["bone"], layers["scalp"]])
    meninges = outside * within(edges[0])
    bone = outside * (within(edges[1]) - within(edges[0]))
    scalp = outside * (within(edges[2]) - within(edges[1]))
    fractions = {"gm": gm, "wm": wm, "csf": csf + meninges, "bone": bone, "scalp": scalp}
    params = {"rotation": rotation.round(6).tolist(), "scale": scale.round(4).tolist(),
              "shift_mm": shift.round(3).tolist(), "elastic_mm": round(elastic_mm, 3),
              "layers_mm": {k: round(v, 3) for k, v in layers.items()}}
    return BrainAnatomy(grid, {k: v.astype(np.float32) for k, v in fractions.items()},
                        np.clip(t1, 0.0, None).astype(np.float32), params)


def _activity(anatomy: BrainAnatomy, rng: np.random.Generator, gen: torch.Generator) -> tuple[np.ndarray, dict]:
    """FDG SUV from the tissue fractions, with the smooth regional variation."""
    f = anatomy.fractions
    gm_suv = float(rng.uniform(*SUV["gm"]))
    ratio = float(rng.uniform(*SUV["gm_wm_ratio"]))
    wm_suv = gm_suv / ratio
    regional = smooth_field(anatomy.grid.shape, anatomy.grid.spacing[0], 50.0, gen, channels=2).numpy()
    regional = np.clip(regional, -2.0, 2.0) / 2.0                      # within ±1
    activity = (f["gm"] * gm_suv * (1.0 + 0.10 * regional[0]) + f["wm"] * wm_suv * (1.0 + 0.05 * regional[1])
                + f["csf"] * SUV["csf"] + f["bone"] * SUV["bone"] + f["scalp"] * SUV["scalp"])
    return activity.astype(np.float32), {"gm_suv": round(gm_suv, 4), "wm_suv": round(wm_suv, 4),
                                         "gm_wm_ratio": round(ratio, 4)}


def _mr(anatomy: BrainAnatomy, lesions: np.ndarray, records: list[dict], rng: np.random.Generator,
        gen: torch.Generator) -> tuple[np.ndarray, dict]:
    """T1 MR: template intensity, dark skull, bright scalp; visible lesions; bias field; Rician noise."""
    f = anatomy.fractions
    image = anatomy.t1 + T1_OUTSIDE["bone"] * f["bone"] + T1_OUTSIDE["scalp"] * f["scalp"]
    for record in records:
        if record["mr_visible"]:
            image[lesions == record["label"]] *= record["mr_factor"]
    bias_amp = float(rng.uniform(0.05, 0.2))
    bias = np.exp(bias_amp * np.clip(smooth_field(anatomy.grid.shape, anatomy.grid.spacing[0], 80.0, gen)[0]
                                     .numpy(), -2.0, 2.0) / 2.0)
    sigma = float(rng.uniform(0.01, 0.03)) * 0.87
    signal = image * bias
    real = signal + sigma * torch.randn(signal.shape, generator=gen).numpy()
    imag = sigma * torch.randn(signal.shape, generator=gen).numpy()
    return np.sqrt(real * real + imag * imag).astype(np.float32), {"bias_amplitude": round(bias_amp, 4),
                                                                    "noise_sigma": round(sigma, 5)}


def _lesion_contrast(rng: np.random.Generator) -> dict:
    hyper = bool(rng.uniform() < 0.6)
    factor = float(rng.uniform(1.5, 3.0) if hyper else rng.uniform(0.3, 0.7))
    visible = bool(rng.uniform() < 0.5)
    return {"type": "hyper" if hyper else "hypo", "factor": round(factor, 4), "mr_visible": visible,
            "mr_factor": round(float(rng.uniform(0.7, 0.9)), 4) if visible else 1.0}


def brain_subject(seed: int, protocol: PetProtocol = PetProtocol()) -> Anatomy:
    """One brain subject on the protocol's grid: true FDG SUV, μ-map, T1 MR, lesion labels and record."""
    rng = np.random.default_rng([int(seed), 43])
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    anatomy = brain_anatomy(seed, protocol)
    activity, suv = _activity(anatomy, rng, gen)
    f = anatomy.fractions
    tissue = f["gm"] + f["wm"]
    labels = np.zeros(anatomy.grid.shape, np.int16)
    specs = [_lesion_contrast(rng) for _ in range(int(rng.integers(2, 6)))]
    for spec in specs:
        spec["candidates"] = (f["gm"] > 0.5) if spec["type"] == "hypo" else (tissue > 0.7)
    records = add_lesions(activity, labels, specs, rng, protocol.voxel_mm, allowed=tissue > 0.4,
                          diameter_mm=(4.0, 20.0), grid=anatomy.grid)
    background = add_background_region(labels, f["wm"] > 0.97, protocol.voxel_mm, radius_mm=10.0)
    mu = (MU["soft"] * (f["gm"] + f["wm"] + f["csf"] + f["scalp"]) + MU["bone"] * f["bone"]).astype(np.float32)
    mr, mr_info = _mr(anatomy, labels, records, rng, gen)
    grid = anatomy.grid
    info = {"anatomy": {"template": "MNI152 ICBM 2009a (nilearn)", **anatomy.params}, "suv": suv,
            "mr": {"contrast": "T1", **mr_info}, "lesions": records,
            "background_region": {**background, "tissue": "white matter"}}
    return Anatomy(activity=grid.volume(activity, modality="PT", units="SUV"),
                   mu=grid.volume(mu, units="1/cm"), mr=grid.volume(mr, modality="MR", units="a.u."),
                   lesions=grid.volume(labels.astype(np.float32), units="label"), fractions=f, info=info)
