"""The 4D cardiac synthesis networks: dual-decoder VAE, clinical/phase conditioning, slice masks, LDMs, CFG."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from meddiffusion.diffusion.latent import LatentDiffusion
from meddiffusion.nets.cardiac4d import (
    CARDIAC4D_CONFIGS,
    NULL_DIAGNOSIS,
    AnatomyLDM,
    ClinicalEncoder,
    DualDecoderVAE,
    MotionLDM,
    clinical_scalars,
    crop_slices,
    drop_condition,
    kl_divergence,
    make_discriminator,
    null_condition,
    pad_slices,
    phase_embedding,
    slice_mask,
)

TINY = CARDIAC4D_CONFIGS["tiny"]
LATENT = (2, TINY["anatomy"]["latent_channels"], 4, 8, 8)  # (B, C, D, h, w) of the tiny LDM tests


def _vae():
    torch.manual_seed(0)
    return DualDecoderVAE(**TINY["vae"]).eval()


def _randomised(net):
    """MONAI zero-initialises the UNet's output conv, block convs and attention projections; undo that."""
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def _ldm(cls):
    torch.manual_seed(0)
    return cls(**TINY["anatomy" if cls is AnatomyLDM else "motion"])


def _cond(batch=2, motion=False):
    gen = torch.Generator().manual_seed(1)
    n = torch.tensor([3, 4])[:batch]
    cond = {"diagnosis": torch.tensor([1, 3])[:batch],
            "scalars": clinical_scalars(torch.tensor([60.0, 25.0])[:batch], 150.0, 60.0, n),
            "mask": slice_mask(n, *LATENT[2:])}
    if motion:
        cond["z_ed"] = torch.randn(batch, *LATENT[1:], generator=gen)
        cond["tau"] = torch.tensor([30.0, 100.0])[:batch]
    return cond


# ---------------------------------------------------------------------------------------------- VAE
def test_vae_shapes_of_latent_and_both_decoders():
    vae = _vae()
    x = torch.randn(2, 1, 16, 32, 32)
    assert vae.factor == 4 and vae.latent_shape(x.shape) == (2, 2, 16, 8, 8)
    out = vae(x, generator=torch.Generator().manual_seed(0))
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, 2, 16, 8, 8)
    assert out["image"].shape == (2, 1, 16, 32, 32)
    assert out["logits"].shape == (2, 4, 16, 32, 32)
    assert not torch.equal(out["z"], out["mu"])  # forward samples
    torch.testing.assert_close(vae.decode_image(out["z"]), out["image"])
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.encode(torch.randn(1, 1, 16, 30, 32))
    with pytest.raises(ValueError, match="takes"):
        vae.encode(torch.randn(1, 2, 16, 32, 32))


def test_default_vae_maps_a_96x96x16_frame_to_a_16x24x24_latent():
    assert DualDecoderVAE().latent_shape((2, 1, 16, 96, 96)) == (2, 4, 16, 24, 24)


def test_vae_never_downsamples_depth_and_pads_by_replication():
    vae = _vae()
    with torch.no_grad():
        mu, _ = vae.encode(torch.randn(1, 1, 5, 16, 16))  # an odd depth survives too
        assert mu.shape == (1, 2, 5, 4, 4)
        assert vae.decode_labels(mu).shape == (1, 4, 5, 16, 16)
    strides = [m.stride for m in vae.modules() if isinstance(m, torch.nn.Conv3d)]
    assert (1, 2, 2) in strides and all(s[0] == 1 for s in strides)
    padded = [m for m in vae.modules() if isinstance(m, torch.nn.Conv3d) and any(m.padding)]
    assert padded and all(m.padding_mode == "replicate" for m in padded)


def test_replicate_padding_makes_a_constant_image_give_a_constant_latent():
    vae = _vae()
    with torch.no_grad():  # zero padding would make the border voxels differ from the centre
        mu, _ = vae.encode(torch.full((1, 1, 4, 16, 16), 0.7))
    torch.testing.assert_close(mu, mu[..., :1, :1, :1].expand_as(mu))


def test_sample_is_the_reparameterisation_with_a_clamped_logvar():
    mu = torch.zeros(1, 1, 64, 64, 64)
    z = DualDecoderVAE.sample(mu, torch.full_like(mu, math.log(4.0)), torch.Generator().manual_seed(0))
    assert z.std().item() == pytest.approx(2.0, rel=0.01)
    again = DualDecoderVAE.sample(mu, torch.full_like(mu, math.log(4.0)), torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    assert torch.isfinite(DualDecoderVAE.sample(mu, torch.full_like(mu, 1e4))).all()


def test_kl_divergence_is_zero_at_the_prior_and_matches_the_closed_form():
    assert kl_divergence(torch.zeros(3, 2, 4, 4, 4), torch.zeros(3, 2, 4, 4, 4)).item() == 0.0
    mu = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    logvar = torch.log(torch.tensor([[2.0, 0.5], [1.0, 1.0]]))
    # 1/2 (mu² + σ² - ln σ² - 1) per element, summed per sample, averaged over the 2 samples
    first = 0.5 * (1 + 2 - math.log(2) - 1) + 0.5 * (0.5 - math.log(0.5) - 1)
    second = 0.5 * 4.0
    assert kl_divergence(mu, logvar).item() == pytest.approx((first + second) / 2, rel=1e-6)
    prior = torch.distributions.Normal(0.0, 1.0)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()), prior)
    assert kl_divergence(mu, logvar).item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-6)


def test_discriminator_handles_an_anisotropic_frame():
    disc = make_discriminator()
    logits = disc(torch.randn(2, 1, 16, 96, 96))[-1]
    assert logits.shape == (2, 1, 2, 22, 22) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------- conditions
def test_clinical_scalars_scale_and_broadcast():
    s = clinical_scalars(60.0, 150.0, 60.0, 10)
    torch.testing.assert_close(s, torch.tensor([[0.6, 0.25, 0.1, 0.5]]))
    s = clinical_scalars(torch.tensor([50.0, 70.0]), 300.0, torch.tensor([150.0, 90.0]), 12)
    assert s.shape == (2, 4)
    torch.testing.assert_close(s[:, 0], torch.tensor([0.5, 0.7]))
    torch.testing.assert_close(s[:, 3], torch.tensor([0.6, 0.6]))


def test_clinical_encoder_separates_conditions_and_gives_one_null_token():
    torch.manual_seed(0)
    enc = ClinicalEncoder(8)
    scalars = clinical_scalars(60.0, 150.0, 60.0, 10).expand(6, 4)
    tokens = enc(torch.arange(6), scalars)
    assert tokens.shape == (6, 1, 8)
    assert torch.cdist(tokens[:, 0], tokens[:, 0]).add(torch.eye(6)).min() > 1e-4  # every diagnosis differs
    other = enc(torch.tensor([1]), clinical_scalars(30.0, 250.0, 175.0, 10))
    assert not torch.allclose(other, tokens[1:2], atol=1e-5)
    cond = {"diagnosis": torch.tensor([1, 4, 5]), "scalars": clinical_scalars(torch.tensor([20.0, 60.0, 70.0]),
                                                                             200.0, 50.0, 9)}
    null = null_condition(cond)
    null_tokens = enc(null["diagnosis"], null["scalars"])
    torch.testing.assert_close(null_tokens, null_tokens[:1].expand(3, 1, 8))  # the same for every case
    assert not torch.allclose(null_tokens[:1], enc(torch.tensor([0]), torch.zeros(1, 4)), atol=1e-5)
    with pytest.raises(ValueError, match="0..6"):
        enc(torch.tensor([NULL_DIAGNOSIS + 1]), torch.zeros(1, 4))


def test_phase_embedding_is_sinusoidal_in_tau():
    tau = torch.tensor([0.0, 100.0, 200.0])
    emb = phase_embedding(tau, 8)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb, torch.cat([torch.cos(tau[:, None] * freqs), torch.sin(tau[:, None] * freqs)], 1))
    assert not torch.allclose(emb[0], emb[1]) and phase_embedding(50.0, 8).shape == (1, 8)


def test_slice_mask_is_central_and_matches_padding():
    mask = slice_mask(torch.tensor([3, 16, 4]), 16, 5, 6)
    assert mask.shape == (3, 1, 16, 5, 6) and mask.dtype == torch.float32
    assert mask[:, 0, :, 0, 0].sum(1).tolist() == [3, 16, 4]
    assert torch.nonzero(mask[0, 0, :, 0, 0]).flatten().tolist() == [6, 7, 8]  # start (16 - 3) // 2
    assert torch.nonzero(mask[2, 0, :, 0, 0]).flatten().tolist() == [6, 7, 8, 9]
    assert (mask == mask[..., :1, :1]).all()
    padded = pad_slices(np.ones((1, 3, 5, 6), np.float32), 16, fill=0.0)
    np.testing.assert_array_equal(padded[0], mask[0, 0].numpy())
    with pytest.raises(ValueError, match="1..16"):
        slice_mask(17, 16, 4, 4)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_pad_and_crop_slices_round_trip(as_tensor):
    volume = np.arange(2 * 5 * 3 * 4, dtype=np.float32).reshape(2, 5, 3, 4)
    if as_tensor:
        volume = torch.from_numpy(volume)
    padded = pad_slices(volume, 16, fill=-1.0)
    assert type(padded) is type(volume) and padded.shape == (2, 16, 3, 4)
    assert (padded[:, :5] == -1).all() and (padded[:, 10:] == -1).all()  # start (16 - 5) // 2 = 5
    assert (padded[:, 5:10] == volume).all()
    assert (crop_slices(padded, 5) == volume).all()
    with pytest.raises(ValueError, match="does not fit"):
        pad_slices(volume, 4)


# ------------------------------------------------------------------------------------------ LDMs
def test_anatomy_ldm_shape_and_conditioning():
    net = _ldm(AnatomyLDM)
    x, t = torch.randn(*LATENT), torch.tensor([10, 500])
    cond = _cond()
    with torch.no_grad():
        assert torch.equal(net(x, t, cond), torch.zeros(*LATENT))  # MONAI's zero-initialised output
        _randomised(net)
        out = net(x, t, cond)
        assert out.shape == LATENT and torch.isfinite(out).all()
        other = net(x, t, dict(cond, diagnosis=torch.tensor([4, 3])))
        assert not torch.allclose(other[0], out[0], atol=1e-5)
        torch.testing.assert_close(other[1], out[1])  # per sample
        assert not torch.allclose(net(x, t, dict(cond, mask=slice_mask(torch.tensor([2, 4]), *LATENT[2:]))), out)
    with pytest.raises(KeyError, match="mask"):
        net(x, t, {k: v for k, v in cond.items() if k != "mask"})
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.randn(2, 2, 3, 8, 8), t, dict(cond, mask=torch.ones(2, 1, 3, 8, 8)))


def test_motion_ldm_shape_and_conditioning():
    net = _randomised(_ldm(MotionLDM))
    assert net.unet.conv_in.conv.in_channels == 2 * LATENT[1] + 1
    x, t = torch.randn(*LATENT), torch.tensor([10, 500])
    cond = _cond(motion=True)
    with torch.no_grad():
        out = net(x, t, cond)
        assert out.shape == LATENT and torch.isfinite(out).all()
        assert not torch.allclose(net(x, t, dict(cond, tau=torch.tensor([150.0, 100.0])))[0], out[0], atol=1e-5)
        assert not torch.allclose(net(x, t, dict(cond, diagnosis=torch.tensor([5, 3])))[0], out[0], atol=1e-5)
        assert not torch.allclose(net(x, t, dict(cond, z_ed=torch.zeros(*LATENT))), out, atol=1e-5)
    with pytest.raises(KeyError, match="tau"):
        net(x, t, {k: v for k, v in cond.items() if k != "tau"})


def test_null_condition_keeps_everything_but_the_clinical_part():
    cond = _cond(motion=True)
    original = {k: v.clone() for k, v in cond.items()}
    null = null_condition(cond)
    assert null["diagnosis"].tolist() == [NULL_DIAGNOSIS] * 2 and not null["scalars"].any()
    assert null["z_ed"] is cond["z_ed"] and null["mask"] is cond["mask"] and null["tau"] is cond["tau"]
    assert all(torch.equal(cond[k], original[k]) for k in cond)  # the input is not modified


def test_drop_condition_nulls_each_sample_with_probability_p():
    cond = _cond(motion=True)
    kept = drop_condition(cond, 0.0)
    assert all(torch.equal(kept[k], cond[k]) for k in cond)
    dropped, null = drop_condition(cond, 1.0), null_condition(cond)
    assert all(torch.equal(dropped[k], null[k]) for k in cond)
    many = {"diagnosis": torch.full((400,), 2), "scalars": torch.rand(400, 4) + 0.1}
    half = drop_condition(many, 0.5, torch.Generator().manual_seed(0))
    nulled = half["diagnosis"] == NULL_DIAGNOSIS
    assert 150 < nulled.sum() < 250
    assert not half["scalars"][nulled].any() and torch.equal(half["scalars"][~nulled], many["scalars"][~nulled])
    again = drop_condition(many, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again["diagnosis"], half["diagnosis"])


@pytest.mark.parametrize("cls", [AnatomyLDM, MotionLDM])
def test_guided_ddim_sampling_runs_with_each_ldm(cls):
    net = _randomised(_ldm(cls))
    cond = _cond(motion=cls is MotionLDM)
    diffusion = LatentDiffusion()
    noise = torch.randn(*LATENT, generator=torch.Generator().manual_seed(2))
    guided = diffusion.ddim_sample(net, noise, cond, null_condition(cond), num_steps=2, guidance_scale=3.0)
    assert guided.shape == LATENT and torch.isfinite(guided).all()
    plain = diffusion.ddim_sample(net, noise, cond, null_condition(cond), num_steps=2, guidance_scale=1.0)
    torch.testing.assert_close(plain, diffusion.ddim_sample(net, noise, cond, num_steps=2), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(guided, plain, atol=1e-4)  # the guidance acts
    one = {k: v[:1] for k, v in cond.items()}  # a batch-1 condition broadcast by the sampler
    assert diffusion.ddim_sample(net, noise, one, null_condition(one), num_steps=2).shape == LATENT


def test_small_config_is_the_constructors_defaults():
    small = CARDIAC4D_CONFIGS["small"]
    for cls, key in ((DualDecoderVAE, "vae"), (AnatomyLDM, "anatomy"), (MotionLDM, "motion")):
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        assert {k: defaults[k] for k in small[key]} == small[key], key
