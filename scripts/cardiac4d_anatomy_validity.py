"""How often the anatomy LDM's end-diastolic heart is valid, per DDIM step count, on validation requests.

The bench's validity failures come from the end-diastolic anatomy (the VAE round trip of
phantom cines is always valid), so a step count or guidance for the anatomy stage can be chosen
on the anatomy alone: for each setting, ``--count`` requests from the bench's request generator
with the validation seed (never the held-out one), one draw each (noise seed 1000 + request),
decoded and read by the basal-slice convention, then ``measure.check_sample`` on that one frame.
Prints, per setting, the valid share per group, the EDV error, and each failure's reason.

    python scripts/cardiac4d_anatomy_validity.py --count 60 --steps 20,50 [--guidance 1] [--model ID]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch


def anatomy_validity(model, count: int, steps: int, guidance: float) -> dict:
    from meddiffusion.tasks.cardiac4d.bench import GROUPS, VALIDATION_SEED, heldout_requests
    from meddiffusion.tasks.cardiac4d.measure import volumes_ml

    valid, errors, failures = defaultdict(int), defaultdict(list), []
    for i, request in enumerate(heldout_requests(count, seed=VALIDATION_SEED)):
        generator = torch.Generator().manual_seed(1000 + i)
        cond = model.condition(request, "cpu")
        z_ed = model.draw_anatomy(cond, steps, guidance, generator, "cpu")
        labels, check = model.check_anatomy(z_ed, request.slices)
        edv = float(volumes_ml(labels, model.spacing)["lv"][0])
        valid[request.diagnosis] += check.valid
        errors[request.diagnosis].append(abs(edv - request.edv_ml))
        if not check.valid:
            failures.append(f"request {i} {request.diagnosis} EDV {request.edv_ml:.0f} ml: {'; '.join(check.reasons)}")
    per_group = {g: f"{valid[g]}/{len(errors[g])}" for g in GROUPS}
    return {"steps": steps, "guidance": guidance, "valid": sum(valid.values()), "count": count, "groups": per_group,
            "edv_mae_ml": round(float(np.mean([e for g in GROUPS for e in errors[g]])), 1),
            "edv_mae_by_group": {g: round(float(np.mean(errors[g])), 1) for g in GROUPS}, "failures": failures}


def main() -> None:
    from meddiffusion.tasks.cardiac4d.model import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="motion model of the cascade (default: the catalogue's)")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--steps", default="20,50", help="comma-separated DDIM step counts")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    for steps in (int(v) for v in args.steps.split(",")):
        print(json.dumps(anatomy_validity(model, args.count, steps, args.guidance)), flush=True)


if __name__ == "__main__":
    main()
