"""benchmarks/int8_sensitivity.py: it ranks first the tensor whose one int8 range leaves its
channels too few steps, and shows what one range per channel would win back for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks.int8_sensitivity import sensitivity
from once_for_all.quant_aware import activation_ranges

REPO = Path(__file__).resolve().parents[2]


class WideChannel(nn.Module):
    """conv → batch norm → ReLU → mean → linear, with batch norm channel 0 scaled 500× and
    the classifier reading it 500× smaller: the same logits as without the scale, but one
    range per tensor leaves the other seven channels of the batch norm output a step or two,
    as the fmnist supernet's stem does its small channels (0.2 to 55 across eight)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8).eval()
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(8, 10)
        with torch.no_grad():
            self.bn.weight[0] *= 500
            self.bn.bias[0] *= 500
            self.classifier.weight[:, 0] /= 500

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_the_widest_tensor_ranks_first_and_per_channel_wins_it_back() -> None:
    model = WideChannel()
    # Images whose means differ, so that the logits do: noise alone would give near-equal ones.
    torch.manual_seed(1)
    x = 2 * torch.randn(464, 3, 1, 1) + 0.3 * torch.randn(464, 3, 8, 8)
    images, calibration = x[:400], x[400:]
    result = sensitivity(model, images, calibration, top=2)

    tensors = result["tensors"]
    assert sorted(t["tensor"] for t in tensors) == sorted(activation_ranges(model, calibration))
    assert [t["agreement"] for t in tensors] == sorted(t["agreement"] for t in tensors)
    # Batch norm's and ReLU's outputs carry the wide channel; the logits do not.
    assert {t["tensor"] for t in tensors[:2]} == {"bn", "relu"}
    assert tensors[0]["agreement"] < 0.8 and tensors[2]["agreement"] > 0.95
    assert result["all"] <= tensors[0]["agreement"] + 0.05
    assert [p["tensor"] for p in result["per_channel"]] == [t["tensor"] for t in tensors[:2]]
    assert result["per_channel_together"] > 0.95
    # The classifier reads channel 0 through weights 500x smaller than its others: one int8
    # scale per row rounds them to nothing, and the weights-only simulation shows it.
    assert result["weights"] < 0.95


def test_a_missing_supernet_is_one_line_and_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.int8_sensitivity", "--supernet", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr.strip().splitlines()[-1].endswith("no such file; train one with edgenas train")
    )
