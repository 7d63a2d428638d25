"""fp32 vs bf16 autocast: time per call and output error, per network type.

bf16 is only worth using where it is both faster and accurate enough: on CPUs without
native bf16 it is emulated and slower, and some networks lose more precision than others.
The maximum error is relative to the fp32 output's range.
"""

from __future__ import annotations

import torch

from meddiffusion.benchmarks.harness import each_case, markdown_table, result, timed


def _networks(quick: bool):
    from monai.networks.nets import BasicUNet

    from meddiffusion.nets.clearnet import clearnet_small

    size = 128 if quick else 512
    x3 = torch.randn(1, 3, size, size)
    t = torch.tensor([5])
    yield ("CLEAR-Net small (LDCT, CPU config)", clearnet_small(), lambda m, x=x3: m(x, t), size)
    yield ("MONAI BasicUNet 2D (32..256)", BasicUNet(2, 3, 1, features=(32, 32, 64, 128, 256, 32)),
           lambda m, x=x3: m(x), size)


def run(device: torch.device, quick: bool = False, progress=None) -> dict:
    rows = []
    for name, net, call, size in each_case(progress, "precision", _networks(quick)):
        torch.manual_seed(0)
        net = net.to(device).eval()
        with torch.inference_mode():
            ref = call(net).float()
            t32 = timed(lambda: call(net), repeats=1 if quick else 3)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = call(net).float()
                tbf = timed(lambda: call(net), repeats=1 if quick else 3)
        err = float((out - ref).abs().max() / (ref.max() - ref.min()).clamp_min(1e-12))
        rows.append({"network": name, "size": size, "fp32_ms": 1e3 * t32, "bf16_ms": 1e3 * tbf,
                     "max_rel_error": err})
    table = markdown_table(("network", "input", "fp32 ms/call", "bf16 ms/call", "bf16 max error (of range)"),
                           [(r["network"], f"{r['size']}²", f"{r['fp32_ms']:.0f}", f"{r['bf16_ms']:.0f}",
                             f"{r['max_rel_error']:.1e}") for r in rows])
    return result(table, device, rows=rows)
