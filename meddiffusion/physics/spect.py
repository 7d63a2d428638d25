"""Cardiac SPECT myocardial perfusion studies from the phantom: acquisition, NAC and AC reconstruction.

A study is what a SPECT/CT camera gives for one Tc-99m sestamibi acquisition (stress or rest):
the projections of the true activity through the true attenuation, blurred by an LEHR
collimator and drawn with Poisson noise, then reconstructed twice with the same OSEM and
post-filter, without attenuation correction (NAC) and with the true μ-map (AC).  The ratio
AC/NAC in the myocardium is the attenuation correction factor a network has to learn, and the
patients (:func:`sample_spect_patient`) carry what makes NAC misleading: breasts, a raised
diaphragm, sub-diaphragmatic tracer, obesity.

Protocol defaults (:class:`SpectProtocol`) follow the ASNC imaging guideline for Tc-99m MPI
(Dorbala et al., J Nucl Cardiol 25:1784, 2018) and the EANM procedural guideline (Verberne et
al., EJNMMI 42:1929, 2015):

- 64 × 64 matrix of 6.4 mm pixels (the guideline's 6.4 ± 0.4 mm), cubic voxels;
- a 180° orbit from RAO 45° to LPO 45° over the heart (the usual cardiac arc; ``orbit_deg``
  = 360 for a full circle) with 64 views: 60-64 stops over 180° is the guideline value for
  Tc-99m, and halving to 32 loses resolution for a saving (about 35 %) that the run-time
  target does not need;
- a GE LEHR collimator (pytomography's "GI-LEHR": 1.5 mm holes, 35 mm long) with 3.8 mm
  intrinsic resolution: 7 mm FWHM at 10 cm, on a 23 cm orbit radius;
- 5 million counts in the projections: about 1 GBq of sestamibi (stress), 15-20 % of it in
  the field of view at 45-60 min, a third of its photons escaping the body, ~80 cps/MBq for
  LEHR and 64 stops × 20 s give 4-6 Mcounts; a low-dose rest study has fewer (``counts``);
- OSEM 4 iterations × 8 subsets (32 updates, in the usual 20-40 range for cardiac OSEM) and
  a 3D Gaussian post-filter of 10 mm FWHM, about a Butterworth of order 5 at 0.5 Nyquist;
- 40 axial slices (256 mm): the heart with the breasts, diaphragm and liver dome around it;
  slices further out add time and no counts (the collimator is parallel-hole).

The activity is averaged over the heartbeat (``frames`` phases: an ungated study blurs the
wall motion, as a real one does); the μ-map and the CT are taken at end-diastole in
breath-hold, as a low-dose CT for attenuation correction is.  Projector and reconstruction are
pytomography 3.4's rotate-and-sum ``SPECTSystemMatrix`` with ``SPECTAttenuationTransform`` and
``SPECTPSFTransform``.  Scatter is not simulated (the image is the primary photopeak image).

Units: a reconstruction voxel is in "counts": the primary counts it would give each view with
no attenuation.  NAC and AC share them, so AC/NAC is the correction factor.

Time per study on the 2-core development machine at the defaults (64 views, 40 slices, 8
cardiac phases, 128² × 80 CT), measured with ``meddiff simulate-spect`` while other jobs
shared the machine (load ≈ 3.5): 9.3 s wall, 11 s CPU, from the seed to the written files
(phantom and rendering ≈ 3 s, projection ≈ 1.5 s, NAC ≈ 3.5 s, AC ≈ 5 s on one thread).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from meddiffusion.io import Volume, resample_onto
from meddiffusion.phantoms.grid import Grid
from meddiffusion.phantoms.heart import TERRITORIES, Defect, Region
from meddiffusion.phantoms.phantom import Phantom
from meddiffusion.phantoms.presets import PhantomParams, sample_params
from meddiffusion.phantoms.render import render_ct, render_spect
from meddiffusion.phantoms.tissues import MU_WATER, mu_from_hu

__all__ = ["SpectProtocol", "SpectStudy", "spect_grid", "ct_grid", "simulate_study", "project", "reconstruct",
           "hu_to_mu140", "chang_correction", "sample_spect_patient", "view_angles"]

MU_WATER_140 = MU_WATER[140]


@dataclass(frozen=True)
class SpectProtocol:
    """Acquisition and reconstruction settings (see the module docstring for the sources)."""

    matrix: int = 64
    pixel_mm: float = 6.4
    slices: int = 40
    views: int = 64
    orbit_deg: float = 180.0
    counts: float = 5e6
    iterations: int = 4
    subsets: int = 8
    postfilter_fwhm_mm: float = 10.0
    radius_mm: float = 230.0
    collimator: str = "GI-LEHR"
    intrinsic_mm: float = 3.8
    frames: int = 8
    ct_pixel_mm: float = 3.2

    def __post_init__(self) -> None:
        checks = [
            (16 <= self.matrix <= 256, f"SPECT matrix must be 16-256, got {self.matrix}"),
            (1.0 <= self.pixel_mm <= 20.0, f"SPECT pixel must be 1-20 mm, got {self.pixel_mm}"),
            (4 <= self.slices <= 256, f"SPECT slices must be 4-256, got {self.slices}"),
            (4 <= self.views <= 256, f"views must be 4-256, got {self.views}"),
            (self.orbit_deg in (180.0, 360.0), f"orbit must be 180 or 360 degrees, got {self.orbit_deg}"),
            (1e4 <= self.counts <= 1e9, f"counts must be 1e4-1e9, got {self.counts:g}"),
            (1 <= self.iterations <= 50, f"OSEM iterations must be 1-50, got {self.iterations}"),
            (1 <= self.subsets <= self.views, f"OSEM subsets must be 1-{self.views}, got {self.subsets}"),
            (0.0 <= self.postfilter_fwhm_mm <= 50.0, f"post-filter must be 0-50 mm, got {self.postfilter_fwhm_mm}"),
            (100.0 <= self.radius_mm <= 500.0, f"orbit radius must be 100-500 mm, got {self.radius_mm}"),
            (1 <= self.frames <= 32, f"cardiac phases must be 1-32, got {self.frames}"),
            (0.5 <= self.ct_pixel_mm <= self.pixel_mm, f"CT pixel must be 0.5 mm to the SPECT pixel, "
                                                       f"got {self.ct_pixel_mm}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SpectStudy:
    """One simulated study: volumes on the SPECT grid (``ct`` on its finer grid) and its record.

    ``projections`` are the noisy views (views, radial bins, slices) in pytomography's layout.
    """

    nac: Volume
    ac: Volume
    mu: Volume
    ct: Volume
    activity: Volume
    info: dict
    projections: np.ndarray | None = field(default=None, repr=False)


# -- geometry ------------------------------------------------------------------------------------
def _centre(phantom: Phantom) -> np.ndarray:
    """Body axis in-plane, heart centre axially: where the camera's rotation centre goes."""
    body, heart = phantom.params.thorax, phantom.heart
    ed = heart.state(0.0)
    z = float((ed.apex + 0.5 * heart.base_height * heart.e_h)[2])
    return np.array([0.0, 0.5 * (body.back_mm - body.front_mm), z])


def spect_grid(phantom: Phantom, protocol: SpectProtocol = SpectProtocol()) -> Grid:
    """The axial SPECT grid (LPS) about the rotation centre, with the heart in its middle slice."""
    n, d = protocol.matrix, protocol.pixel_mm
    return Grid.centred((n, n, protocol.slices), (d, d, d), _centre(phantom))


def ct_grid(phantom: Phantom, protocol: SpectProtocol = SpectProtocol()) -> Grid:
    """The CT grid: the same field of view as the SPECT in ``ct_pixel_mm`` voxels."""
    ratio = protocol.pixel_mm / protocol.ct_pixel_mm
    n, nz = int(round(protocol.matrix * ratio)), int(round(protocol.slices * ratio))
    d = protocol.ct_pixel_mm
    return Grid.centred((n, n, nz), (d, d, d), _centre(phantom))


def view_angles(protocol: SpectProtocol) -> np.ndarray:
    """Detector positions in degrees: 0 anterior, 90 left lateral (clinical convention).

    180°: from RAO 45° (-45°) through anterior and left to LPO 45° (135°); 360°: from anterior.
    """
    start = -45.0 if protocol.orbit_deg == 180.0 else 0.0
    return start + np.arange(protocol.views) * protocol.orbit_deg / protocol.views


# -- pytomography --------------------------------------------------------------------------------
def _pytomography():
    """Import pytomography quietly: it prints a line on import and would silence every warning."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        from pytomography.algorithms import OSEM
        from pytomography.io.SPECT.dicom import get_psfmeta_from_scanner_params
        from pytomography.likelihoods import PoissonLogLikelihood
        from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta
        from pytomography.projectors.SPECT import SPECTSystemMatrix
        from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform
        from pytomography.utils import pad_object, rotate_detector_z, unpad_object
    return dict(OSEM=OSEM, PoissonLogLikelihood=PoissonLogLikelihood, SPECTObjectMeta=SPECTObjectMeta,
                SPECTProjMeta=SPECTProjMeta, SPECTSystemMatrix=SPECTSystemMatrix,
                SPECTAttenuationTransform=SPECTAttenuationTransform, SPECTPSFTransform=SPECTPSFTransform,
                get_psfmeta_from_scanner_params=get_psfmeta_from_scanner_params, pad_object=pad_object,
                rotate_detector_z=rotate_detector_z, unpad_object=unpad_object)


@contextlib.contextmanager
def _one_thread():
    """pytomography's per-view rotations and small convolutions run on one CPU thread.

    Measured here: with two threads on a busy 2-core machine the same reconstruction took
    7× the CPU time and 4-9× the wall time of one thread; one thread also lets several
    studies run side by side.  The caller's thread count is restored.
    """
    import pytomography

    if str(pytomography.device) != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to_object(array: np.ndarray) -> torch.Tensor:
    """(z, y, x) array -> pytomography object [x, y, z] (x = patient left, y = posterior)."""
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32).permute(2, 1, 0).contiguous()


def _from_object(obj: torch.Tensor) -> np.ndarray:
    return obj.detach().cpu().permute(2, 1, 0).contiguous().numpy().astype(np.float32)


def _system(protocol: SpectProtocol, slices: int, mu: np.ndarray | None):
    """pytomography's system matrix: attenuation (if ``mu``) then depth-dependent collimator blur.

    pytomography puts its detector at -y for β = 0 and at -x for β = 90 (object axes x, y);
    ours are LPS, so the clinical angle θ (0 anterior = -y, 90 left = +x) is β = -θ.
    """
    pt = _pytomography()
    cm = protocol.pixel_mm / 10.0
    obj_meta = pt["SPECTObjectMeta"]([cm, cm, cm], (protocol.matrix, protocol.matrix, slices))
    betas = np.mod(-view_angles(protocol), 360.0)
    proj_meta = pt["SPECTProjMeta"]((protocol.matrix, slices), [cm, cm], betas,
                                    radii=np.full(protocol.views, protocol.radius_mm / 10.0))
    psf = pt["get_psfmeta_from_scanner_params"](protocol.collimator, 140.0,
                                                intrinsic_resolution_140keV=protocol.intrinsic_mm / 10.0)
    transforms = [pt["SPECTPSFTransform"](psf)]
    if mu is not None:
        transforms.insert(0, pt["SPECTAttenuationTransform"](_to_object(mu)))
    return pt["SPECTSystemMatrix"](transforms, [], obj_meta, proj_meta)


def project(activity: np.ndarray, mu: np.ndarray | None, protocol: SpectProtocol) -> np.ndarray:
    """Noise-free projections (views, radial bins, slices) of an activity (z, y, x) on the SPECT grid."""
    system = _system(protocol, activity.shape[0], mu)
    with torch.no_grad(), _one_thread():
        return system.forward(_to_object(activity)).cpu().numpy()


def reconstruct(projections: np.ndarray, protocol: SpectProtocol, mu: np.ndarray | None) -> np.ndarray:
    """OSEM (``iterations`` × ``subsets``) and the Gaussian post-filter: NAC when ``mu`` is None, else AC.

    Returns (z, y, x) in counts (see the module docstring); both use the same collimator model.
    """
    pt = _pytomography()
    import pytomography
    from scipy.ndimage import gaussian_filter

    slices = projections.shape[2]
    system = _system(protocol, slices, mu)
    data = torch.as_tensor(projections, dtype=torch.float32).to(pytomography.device)
    with torch.no_grad(), _one_thread():
        image = pt["OSEM"](pt["PoissonLogLikelihood"](system, data))(protocol.iterations, protocol.subsets)
    image = _from_object(image)
    if protocol.postfilter_fwhm_mm > 0:
        sigma = protocol.postfilter_fwhm_mm / (2 * math.sqrt(2 * math.log(2))) / protocol.pixel_mm
        image = gaussian_filter(image, sigma, mode="constant").astype(np.float32)
    return image


# -- the study -----------------------------------------------------------------------------------
def _null_progress():
    from meddiffusion.progress import Progress

    return Progress()


def simulate_study(phantom: Phantom | PhantomParams, protocol: SpectProtocol = SpectProtocol(), *,
                   stress: bool = True, seed: int = 0, progress=None) -> SpectStudy:
    """Acquire and reconstruct one stress (defect + scar) or rest (scar only) study.

    The same ``seed`` (Poisson noise) and phantom give the same study, bit for bit on one machine.
    """
    if isinstance(phantom, PhantomParams):
        phantom = Phantom(phantom)
    progress = progress or _null_progress()
    grid, fine = spect_grid(phantom, protocol), ct_grid(phantom, protocol)
    times = phantom.frame_times(protocol.frames)
    with progress.stage("render", total=len(times) + 1) as step:
        activity = None
        for t in times:
            image, _ = render_spect(phantom, grid, t, stress=stress)
            activity = image.array.astype(np.float64) if activity is None else activity + image.array
            step()
        activity = (activity / len(times)).astype(np.float32)
        _, mu = render_spect(phantom, grid, 0.0, stress=stress)
        ct = render_ct(phantom, fine, 0.0)
        step()
    with progress.stage("acquire", total=1) as step:
        expected = project(activity, mu.array, protocol)
        expected *= protocol.counts / float(expected.sum())
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 11]).generate_state(1)[0]))
        projections = torch.poisson(torch.as_tensor(expected, dtype=torch.float64), generator=generator)
        projections = projections.to(torch.float32).numpy()
        step()
    with progress.stage("reconstruct", total=2) as step:
        nac = reconstruct(projections, protocol, None)
        step()
        ac = reconstruct(projections, protocol, mu.array)
        step()
    heart = phantom.params.heart
    body = phantom.params.thorax
    info = {
        "protocol": protocol.to_dict(),
        "condition": "stress" if stress else "rest",
        "counts": float(projections.sum()),
        "expected_counts": protocol.counts,
        "noise_seed": int(seed),
        "units": "counts (primary counts per view without attenuation)",
        "view_angles_deg": [round(float(a), 4) for a in view_angles(protocol)],
        "patient": {
            "preset": phantom.params.preset, "seed": phantom.params.seed, "sex": body.sex,
            "breast_mm": body.breast_mm, "breast_ptosis_mm": body.breast_ptosis_mm, "breast_hu": body.breast_hu,
            "diaphragm_mm": body.diaphragm_mm, "gut_uptake": body.gut_uptake, "bowel_loop": body.bowel_loop,
            "half_width_mm": body.half_width_mm, "front_mm": body.front_mm, "back_mm": body.back_mm,
            "fat_mm": body.fat_mm,
            "defect": None if heart.defect is None else heart.defect.territory,
            "defect_severity": None if heart.defect is None else heart.defect.severity,
            "defect_shown": heart.defect is not None and stress,
            "scar": None if heart.infarct is None else heart.infarct.territory,
        },
        "params": phantom.truth()["params"],
    }
    spect = dict(modality="NM", units="counts")
    return SpectStudy(
        nac=grid.volume(nac, **spect), ac=grid.volume(ac, **spect), mu=mu,
        ct=ct, activity=grid.volume(activity, modality="NM", units="relative"), info=info,
        projections=projections)


# -- CT to μ, and Chang's correction ---------------------------------------------------------------
def hu_to_mu140(ct: Volume, grid_like: Volume) -> Volume:
    """CT (HU) -> μ at 140 keV (1/cm) on ``grid_like``'s grid.

    The bilinear transform of ``tissues.mu_from_hu`` (air-water below 0 HU, water-bone above),
    then a Gaussian to the target voxel size (a μ-map is the CT at SPECT resolution, not point
    samples of it) and SimpleITK linear resampling; outside the CT is air.
    """
    from scipy.ndimage import gaussian_filter

    mu = mu_from_hu(ct.array, 140).astype(np.float32)
    wanted = np.asarray(grid_like.spacing_zyx, float)
    have = np.asarray(ct.spacing_zyx, float)
    sigma = np.sqrt(np.clip(wanted ** 2 - have ** 2, 0.0, None)) / (2 * math.sqrt(2 * math.log(2))) / have
    if np.any(sigma > 0.1):
        mu = gaussian_filter(mu, sigma, mode="nearest").astype(np.float32)
    out = resample_onto(ct.with_array(mu, modality="", units="1/cm"), grid_like, default=0.0)
    out.modality, out.units = "", "1/cm"
    return out


def _body_outline(nac: np.ndarray, threshold: float) -> np.ndarray:
    """The body in a NAC image: above ``threshold`` × the 99.5th percentile after smoothing,
    holes (lungs, low-count regions) filled slice by slice."""
    from scipy.ndimage import binary_fill_holes, gaussian_filter

    smooth = gaussian_filter(nac.astype(np.float32), 1.0)
    mask = smooth > threshold * np.percentile(smooth, 99.5)
    return np.stack([binary_fill_holes(s) for s in mask])


def chang_correction(nac: Volume, mu: Volume | None = None, *, n_angles: int = 32,
                     body_threshold: float = 0.06) -> Volume:
    """Chang's first-order attenuation correction in the image (Chang, IEEE TNS 25:638, 1978).

    Each voxel is divided by its attenuation factor averaged over ``n_angles`` directions
    around 360°, exp(-∫μ) from the voxel centre to the edge.  With ``mu`` = None the μ-map is
    water (0.153/cm) inside the body outline found in the NAC itself: the classic CT-free
    method.  ``mu`` must be on the NAC's grid (see :func:`hu_to_mu140`).
    """
    pt = _pytomography()
    if mu is None:
        mu_array = np.where(_body_outline(nac.array, body_threshold), MU_WATER_140, 0.0).astype(np.float32)
    else:
        if mu.shape != nac.shape:
            raise ValueError(f"μ-map shape {mu.shape} differs from the NAC's {nac.shape}; resample it first")
        mu_array = mu.array
    dx = nac.spacing[0] / 10.0
    m = pt["pad_object"](_to_object(mu_array))
    total = torch.zeros_like(m)
    with torch.no_grad(), _one_thread():
        for beta in np.arange(n_angles) * 360.0 / n_angles:
            angle = torch.tensor([float(beta)])
            r = pt["rotate_detector_z"](m, angle)
            path = torch.flip(torch.cumsum(torch.flip(r, (0,)), 0), (0,)) - 0.5 * r     # voxel centre to the edge
            total += pt["rotate_detector_z"](torch.exp(-path * dx), angle, negative=True)
    factor = _from_object(pt["unpad_object"](total / n_angles))
    corrected = np.where(factor > 1e-3, nac.array / np.maximum(factor, 1e-3), 0.0).astype(np.float32)
    return nac.with_array(corrected)


# -- patients --------------------------------------------------------------------------------------
def sample_spect_patient(seed: int, *, sex: str | None = None, breast_mm: float | None = None,
                         diaphragm_mm: float | None = None, defect: str | None = None,
                         severity: float | None = None, scar: bool | None = None, obese: bool | None = None,
                         gut_uptake: float | None = None) -> PhantomParams:
    """One patient referred for myocardial perfusion imaging; keywords fix what they name.

    Distributions (per patient, independent unless said):

    - sex: 40 % women (women are 35-50 % of MPI referrals in the large registries, e.g.
      Hachamovitch et al., Circulation 107:2900, 2003).
    - breasts (women): projection from the chest wall small 10-30 mm (35 %), medium 30-55 mm
      (40 %), large 55-80 mm (25 %); ptosis up to 60 % of the projection; density -50..+20
      HU; position ±10-15 mm.  Breast attenuation is the commonest anterior-wall artefact
      (Burrell & MacDonald, J Nucl Med Technol 34:193, 2006).
    - habitus: normal (35 %), overweight (35 %), obese (30 %, wider and deeper chest, 25-45
      mm of fat; about a third of MPI patients have BMI ≥ 30), kept inside the 41 cm field.
    - diaphragm: raised 12-30 mm in 25 % (inferior-wall artefact, commoner in men), else 0-8 mm.
    - gut uptake: log-uniform 0.5-2 × the standard liver and bowel tracer; a bowel loop
      right under the heart in 30 %.
    - perfusion defect (reversible, stress only) in half: LAD 45 %, RCA 30 %, LCX 25 %;
      mild (severity 0.25-0.45, 40 %) or moderate-severe (0.5-0.8, 60 %).
    - scar (fixed, from the MINF group: thinned, akinetic) in 15 %.
    """
    rng = np.random.default_rng([int(seed), 7])
    u = rng.uniform
    if scar is None:
        scar = bool(u() < 0.15)
    params = sample_params("MINF" if scar else "NOR", seed)
    body = params.thorax
    sex = sex if sex is not None else ("female" if u() < 0.4 else "male")
    if sex not in ("male", "female"):
        raise ValueError(f"sex must be 'male' or 'female', got '{sex}'")
    habitus = rng.choice(3, p=[0.35, 0.35, 0.30])
    if obese is not None:
        habitus = 2 if obese else min(habitus, 1)
    if habitus == 1:
        body.half_width_mm, body.front_mm, body.back_mm = u(160, 180), u(115, 130), u(118, 130)
        body.fat_mm = u(18, 30)
    elif habitus == 2:
        body.half_width_mm, body.front_mm, body.back_mm = u(172, 188), u(125, 150), u(122, 140)
        body.fat_mm = u(25, 45)
    body.sex = sex
    if sex == "female":
        size = rng.choice(3, p=[0.35, 0.40, 0.25])
        body.breast_mm = float(breast_mm if breast_mm is not None else u(*((10, 30), (30, 55), (55, 80))[size]))
        body.breast_ptosis_mm = float(body.breast_mm * u(0.0, 0.6))
        body.breast_shift_mm = (float(u(-10, 15)), float(u(-15, 10)))
        body.breast_hu = float(u(-50, 20))
    elif breast_mm:
        raise ValueError("breasts (breast_mm > 0) are for women: give sex='female'")
    raised = u() < 0.25
    body.diaphragm_mm = float(diaphragm_mm if diaphragm_mm is not None else (u(12, 30) if raised else u(0, 8)))
    body.gut_uptake = float(gut_uptake if gut_uptake is not None else math.exp(u(math.log(0.5), math.log(2.0))))
    body.bowel_loop = bool(u() < 0.3)
    if defect is None and severity is None:
        has_defect = u() < 0.5
    else:
        has_defect = defect is not None
        if not has_defect:
            raise ValueError("a defect severity needs a territory (defect='LAD', 'LCX' or 'RCA')")
    territory = defect if defect is not None else str(rng.choice(["LAD", "RCA", "LCX"], p=[0.45, 0.30, 0.25]))
    if territory not in TERRITORIES:
        raise ValueError(f"unknown defect territory '{territory}'; expected one of {', '.join(TERRITORIES)}")
    mild = u() < 0.4
    level = float(severity if severity is not None else (u(0.25, 0.45) if mild else u(0.5, 0.8)))
    if not 0 < level <= 1:
        raise ValueError(f"defect severity must be in (0, 1], got {level}")
    base = TERRITORIES[territory]
    region = Region(float(base.centre_deg + u(-15, 15)), float(base.half_width_deg * u(0.8, 1.1)), base.low,
                    base.high, base.cap)
    params.heart.defect = Defect(territory, region, level) if has_defect else None
    for name in ("half_width_mm", "front_mm", "back_mm", "fat_mm"):
        setattr(body, name, float(getattr(body, name)))
    body.validate()
    return params
