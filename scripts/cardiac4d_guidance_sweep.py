"""Choose the Cardiac4D guidance scale on validation requests (never the bench's held-out ones).

For each guidance scale, ``--count`` requests from the bench's request generator with a
validation seed: the anatomy LDM draws the end-diastolic latent, the motion LDM the
end-systolic frame only (τ = 100), both decoded and read by the basal-slice convention; EDV,
ESV and EF measured on those labels against the request (Pearson r, MAE, bias). A whole cine is
not needed for these three numbers, so a sweep costs a few seconds per request.

    python scripts/cardiac4d_guidance_sweep.py --count 20 --guidance 1,1.25,1.5,2 [--model ID]
        [--anatomy-weights CKPT --motion-weights CKPT]   # a training checkpoint's EMA weights instead
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

def sweep(model, count: int, scales: list[float], steps: int = 20) -> dict:
    from meddiffusion.tasks.cardiac4d.bench import VALIDATION_SEED, heldout_requests
    from meddiffusion.tasks.cardiac4d.measure import volumes_ml

    requests = heldout_requests(count, seed=VALIDATION_SEED)
    out = {}
    for w in scales:
        rows = []
        for i, request in enumerate(requests):
            generator = torch.Generator().manual_seed(1000 + i)
            cond = model.condition(request, "cpu")
            z_ed = model.draw_anatomy(cond, steps, w, generator, "cpu")
            dz = model.draw_motion(z_ed, cond, np.array([100.0]), steps, w, generator, "cpu")
            z = torch.cat([z_ed, z_ed + dz / model.motion_scale]) / model.latent_scale
            _, labels, _ = model.read(z, request.slices)
            ed, es = volumes_ml(labels, model.spacing)["lv"]
            ef = 100 * (ed - es) / ed if ed > 0 else np.nan
            rows.append((request.edv_ml, ed, request.esv_ml, es, request.ef_percent, ef))
        a = np.array(rows)
        out[w] = {name: {"r": float(np.corrcoef(a[:, k], a[:, k + 1])[0, 1]),
                         "mae": float(np.nanmean(np.abs(a[:, k] - a[:, k + 1]))),
                         "bias": float(np.nanmean(a[:, k + 1] - a[:, k]))}
                  for k, name in ((0, "edv"), (2, "esv"), (4, "ef"))}
    return out


def main() -> None:
    from safetensors.torch import load_file

    from meddiffusion.tasks.cardiac4d.model import load_model
    from meddiffusion.training.checkpoint import strip_prefix

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="motion model of the cascade (default: the catalogue's)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--guidance", default="1,1.5,2,3", help="comma-separated scales")
    parser.add_argument("--anatomy-weights", help="a training checkpoint (.safetensors) for the anatomy LDM")
    parser.add_argument("--motion-weights", help="a training checkpoint (.safetensors) for the motion LDM")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    for net, path in ((model.anatomy, args.anatomy_weights), (model.motion, args.motion_weights)):
        if path:
            net.load_state_dict(strip_prefix("ema/", load_file(path)))
            net.eval()
    for w, figures in sweep(model, args.count, [float(v) for v in args.guidance.split(",")]).items():
        print(json.dumps({"guidance": w, **{k: {m: round(x, 2) for m, x in v.items()} for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
