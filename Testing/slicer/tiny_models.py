"""Untrained tiny networks of every registered task, as catalogue cards, for real backend runs.

``MODELS[task]()`` returns ``(ModelEntry, state_dict)``, or a list of them for a task whose
model is a cascade of cards (registered in order, the one to run last);
``catalog.register_user_model`` puts them in ``$MEDDIFF_MODEL_DIR``, where the ``python -m
meddiffusion`` child finds them.  Each
card is the CPU default of its task (``default_for={"cpu": 1}``) and runs in a second or two.
A new task adds one builder here.
"""

from __future__ import annotations


def ldct_model(model_id: str = "tiny-ldct"):
    """CLEAR-Net at its "tiny" size, sampled in at most 2 steps."""
    import torch

    from meddiffusion.catalog import ModelEntry
    from meddiffusion.nets.clearnet import CLEARNet
    from meddiffusion.tasks.ldct.recipe import network_configs

    config = network_configs()["tiny"]
    torch.manual_seed(0)
    network = CLEARNet(**config)
    entry = ModelEntry(id=model_id, task="ldct", version="0.1", description="untrained tiny CoreDiff for tests",
                       architecture={"network": "CLEARNet", "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                                        for k, v in config.items()},
                                     "diffusion": {"num_timesteps": 2}, "sampler": {"steps": 2}},
                       metrics={"dose": 0.25}, default_for={"cpu": 1})
    return entry, network.state_dict()


def motion_model(model_id: str = "tiny-motion", output_bias: float | None = None):
    """ProDM's 2.5D UNet at its "tiny" size with the Brownian bridge.

    MONAI zero-initialises the UNet's output layer, which makes the model an identity;
    ``output_bias`` (e.g. -0.05: x0 = x_t + 0.05 of the HU window, +25 HU) makes where the
    backend applied the model show in the result.
    """
    import torch

    from meddiffusion.catalog import ModelEntry
    from meddiffusion.nets.prodm import PRODM_CONFIGS, ProDMUNet

    config = PRODM_CONFIGS["tiny"]
    torch.manual_seed(0)
    network = ProDMUNet(context_slices=3, **config)
    if output_bias is not None:
        with torch.no_grad():
            network.unet.out[-1].conv.bias.fill_(output_bias)
    entry = ModelEntry(
        id=model_id, task="motion", version="0.1", description="untrained tiny ProDM for tests",
        architecture={"network": "ProDMUNet",
                      "kwargs": {"context_slices": 3, "channels": list(config["channels"]),
                                 "num_res_blocks": config["num_res_blocks"],
                                 "norm_num_groups": config["norm_num_groups"]},
                      "objective": "bridge",
                      "diffusion": {"kind": "brownian_bridge", "num_timesteps": 1000, "schedule": "linear",
                                    "max_var": 1.0},
                      "sampler": {"steps": 10, "eta": 0.0}, "patch_size": 64,
                      "calcium_loss": {"lambda": 20.0, "tau_hu": 130.0}},
        normalization={"kind": "hu_window", "min_hu": -200, "max_hu": 800, "range": [-1, 1]},
        default_for={"cpu": 1})
    return entry, network.state_dict()


def spect_model(model_id: str = "tiny-spect", variant: str = "student", uniform_acf: bool = True):
    """PADM's network at its "tiny" size with the card ``meddiff train spect`` writes
    (``recipe.architecture``): the CT-free student, the CPU default, or the teacher, which
    ranks after it and so runs only when asked for or guided by a CT or μ-map.

    Untrained, the physics head's random path and μ weights distort the image enough that no
    left ventricle can be found in it; ``uniform_acf`` zeroes them and its auxiliary image
    (x~0 = -1), so the model is a uniform Chang correction (water μ over 10 cm paths:
    AC ≈ 2.3 × NAC) that keeps the heart where the polar map's LV fit finds it.
    """
    import argparse

    import torch

    from meddiffusion.catalog import ModelEntry
    from meddiffusion.nets.padm import PADMNet
    from meddiffusion.tasks.spect import recipe

    args = argparse.Namespace(variant=variant, config="tiny", timesteps=500)
    torch.manual_seed(0)
    network = PADMNet(**recipe.network_kwargs(variant, "tiny"))
    if uniform_acf:
        with torch.no_grad():
            for conv in (network.head.paths, network.head.mu, network.head.aux):
                conv.weight.zero_()
                conv.bias.zero_()
            network.head.aux.bias.fill_(-1.0)
    entry = ModelEntry(id=model_id, task="spect", version="0.1", description=f"untrained tiny PADM {variant} for tests",
                       architecture=recipe.architecture(args),
                       default_for={"cpu": 1} if variant == "student" else {"cpu": 2})
    return entry, network.state_dict()


def spect_teacher_model(model_id: str = "tiny-spect-teacher"):
    """The tiny PADM teacher, for runs with a CT or μ-map (registered by the tests that need it)."""
    return spect_model(model_id, variant="teacher")


def petmr_model(model_id: str = "tiny-petmr", use_mr: bool = False):
    """CSRD's 3D UNet at its "tiny" size with the card ``meddiff train petmr`` writes
    (``model.architecture_of``), sampled in 2 Heun steps: PET only by default, the CPU default
    among PET-only models, so the module contract (which gives no MR) runs it; ``use_mr`` gives
    the MR-guided one, the CPU default among those, which the backend picks when an MR is given.

    Untrained, its output is noise far from the input (the backend then rescales it to the
    input's total activity): runs with it check files, grids, units and plumbing, not denoising.
    """
    import torch

    from meddiffusion.catalog import ModelEntry
    from meddiffusion.nets.csrd import CSRDUNet3D
    from meddiffusion.tasks.petmr.model import architecture_of
    from meddiffusion.tasks.petmr.recipe import network_kwargs

    torch.manual_seed(0)
    network = CSRDUNet3D(use_mr, **network_kwargs("tiny"))
    architecture = architecture_of(use_mr, network_kwargs("tiny"), 16)
    architecture["sampler"]["steps"] = {"cpu": 2, "cuda": 2}
    kind = "MR-guided" if use_mr else "PET-only"
    entry = ModelEntry(id=model_id, task="petmr", version="0.1", description=f"untrained tiny {kind} CSRD for tests",
                       architecture=architecture, default_for={"cpu": 1})
    return entry, network.state_dict()


def petmr_mr_model(model_id: str = "tiny-petmr-mr"):
    """The tiny MR-guided CSRD, for runs with an MR (registered by the tests that need it)."""
    return petmr_model(model_id, use_mr=True)


#: task name -> builder of its tiny model
MODELS = {"ldct": ldct_model, "motion": motion_model, "spect": spect_model, "petmr": petmr_model}


def cardiac4d_models(prefix: str = "tiny-c4d"):
    """The three cards of an untrained tiny 4D cardiac cascade (VAE, anatomy and motion LDMs), as
    ``meddiff train cardiac4d`` writes them, on a 32² × 16 grid, sampled in 2 DDIM steps; the motion
    card is the CPU default. Untrained, its labels fail the plausibility checks: runs with it pass
    ``--keep-implausible`` and check files, grids, sequences and plumbing, not hearts.
    """
    import torch

    from meddiffusion.catalog import ModelEntry
    from meddiffusion.nets.cardiac4d import AnatomyLDM, DualDecoderVAE, MotionLDM
    from meddiffusion.nets.cardiac4d import CARDIAC4D_CONFIGS

    torch.manual_seed(0)
    vae_kwargs = dict(CARDIAC4D_CONFIGS["tiny"]["vae"])
    ldm_kwargs = dict(CARDIAC4D_CONFIGS["tiny"]["anatomy"])
    diffusion = {"kind": "ddpm", "num_train_timesteps": 1000, "schedule": "scaled_linear_beta",
                 "prediction": "epsilon"}
    sampler = {"kind": "ddim", "steps": {"cpu": 2, "cuda": 2}, "guidance": 3.0}
    ids = {name: f"{prefix}-{name}" for name in ("vae", "anatomy", "motion")}

    def untrained(net):
        """MONAI zero-initialises the UNet's last convolution and attention outputs, so a fresh LDM ignores its
        condition; small random weights there let the tests see conditions reach the output."""
        with torch.no_grad():
            for parameter in net.parameters():
                if parameter.ndim > 1 and not parameter.any():
                    parameter.normal_(0.0, 0.05)
        return net.state_dict()

    cards = [
        (ModelEntry(id=ids["vae"], task="cardiac4d", version="0.1", description="untrained tiny cardiac VAE for tests",
                    architecture={"network": "DualDecoderVAE", "kwargs": vae_kwargs, "latent_scale": 1.0,
                                  "grid": {"matrix": 32, "pixel_mm": 3.0, "slice_mm": 10.0, "depth": 16}}),
         DualDecoderVAE(**vae_kwargs).state_dict()),
        (ModelEntry(id=ids["anatomy"], task="cardiac4d", version="0.1", description="untrained tiny anatomy LDM",
                    architecture={"network": "AnatomyLDM", "kwargs": ldm_kwargs, "vae": ids["vae"],
                                  "diffusion": diffusion, "sampler": sampler}),
         untrained(AnatomyLDM(**ldm_kwargs))),
        (ModelEntry(id=ids["motion"], task="cardiac4d", version="0.1", description="untrained tiny motion LDM",
                    architecture={"network": "MotionLDM", "kwargs": ldm_kwargs, "vae": ids["vae"],
                                  "anatomy": ids["anatomy"], "motion_scale": 1.0, "diffusion": diffusion,
                                  "sampler": sampler}, default_for={"cpu": 1}),
         untrained(MotionLDM(**ldm_kwargs))),
    ]
    return cards


#: the cardiac cascade: its three cards, the motion card (the one run) last
MODELS["cardiac4d"] = cardiac4d_models
