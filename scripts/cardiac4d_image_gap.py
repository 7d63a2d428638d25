"""How far the cascade's images are from the phantom's, as a segmenter sees them (validation data only).

A 2D segmenter (the bench's, ``bench.train_segmenter``) is trained on ``--train`` phantom cines of
the validation dataset seed, then reads three kinds of cine, each scored against its own labels
and, for the round trips, against the phantom's:

- held-out phantom cines of the same seed (the segmenter's own domain);
- the VAE round trips of those cines (encoded to mean latents, decoded, read as generated
  labels are): the images the decoders can give at best;
- generated cines of ``--count`` validation requests (``bench.heldout_requests`` with the
  validation seed, one draw each).

If the round trips' decoded labels agree with the phantom's while the segmenter reads the decoded
images much worse than phantom images, the gap is in the image decoder, and synthetic cines
teach a segmenter images unlike the ones it will meet. Never the bench's held-out seed.
``--vae ID`` reads through another VAE of the same latents (an image decoder fine-tuned with
``--decoder-only``), so a new decoder is judged before it replaces the cascade's.

    python scripts/cardiac4d_image_gap.py [--train 10 --test 10 --count 20 --model ID --vae ID --threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

def use_decoder_of(model, vae_id: str) -> None:
    """Decode the cascade's latents with ``vae_id``, which must share its encoder and latent scale."""
    from meddiffusion.tasks.cardiac4d.model import load_vae

    vae, entry = load_vae(vae_id)
    ours, theirs = model.vae.state_dict(), vae.state_dict()
    same = all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("image_decoder."))
    if not same or entry.architecture["latent_scale"] != model.latent_scale:
        raise SystemExit(f"'{vae_id}' does not share the encoder of '{model.vae_entry.id}': its latents differ")
    model.vae, model.vae_entry = vae, entry


def main() -> None:
    from meddiffusion.tasks.cardiac4d import GUIDANCE, data
    from meddiffusion.tasks.cardiac4d import bench as B
    from meddiffusion.tasks.cardiac4d.model import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="motion model of the cascade (default: the catalogue's)")
    parser.add_argument("--train", type=int, default=10, help="phantom cines the segmenter trains on")
    parser.add_argument("--test", type=int, default=10, help="phantom cines it reads (and their round trips)")
    parser.add_argument("--count", type=int, default=20, help="generated cines it reads")
    parser.add_argument("--vae", help="a VAE with the cascade's encoder (a --decoder-only fine-tune) to decode with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", help="a folder to keep the validation phantoms in")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.vae:
        use_decoder_of(model, args.vae)
    protocol = B.phantom_protocol(model, False)
    grid = (model.spacing[0], protocol.pixel_mm, protocol.matrix)

    with tempfile.TemporaryDirectory() as tmp:
        paths = data.build_cache(args.data or tmp, range(args.train + args.test), B.VALIDATION_SEED, protocol)
        studies = data.load_studies(paths)
        train, test = studies[: args.train], studies[args.train :]
        net = B.train_segmenter([(s.images, s.labels) for s in train], B.SEG_STEPS, B.SEG_BATCH, "cpu")
        out = {"phantom images vs their labels": B.mean_dice((B.segment(net, s.images, "cpu"), s.labels) for s in test)}
        trips = []
        for study, z in zip(test, data.encode_studies(model.vae, test, model.depth, "cpu")):
            images, labels, _ = model.read(torch.from_numpy(z), study.images.shape[1])
            images, labels = B.to_grid(images, labels, *grid)
            trips.append((B.segment(net, images, "cpu"), labels, study.labels))
        out["round-trip images vs decoded labels"] = B.mean_dice((p, lab) for p, lab, _ in trips)
        out["round-trip images vs phantom labels"] = B.mean_dice((p, truth) for p, _, truth in trips)
        out["decoded labels vs phantom labels"] = B.mean_dice((lab, truth) for _, lab, truth in trips)

    generated = []
    for i, request in enumerate(B.heldout_requests(args.count, seed=B.VALIDATION_SEED)):
        cine = model.generate(request, seed=data.study_seed(B.VALIDATION_SEED, i), guidance=GUIDANCE)
        images, labels = B.to_grid(cine.images, cine.labels, *grid)
        generated.append((B.segment(net, images, "cpu"), labels))
    out["generated images vs generated labels"] = B.mean_dice(generated)
    for name, figures in out.items():
        print(json.dumps({"read": name, **{key: round(value, 4) for key, value in figures.items()}}))


if __name__ == "__main__":
    main()
