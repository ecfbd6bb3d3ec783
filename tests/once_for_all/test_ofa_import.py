"""OFA's published MobileNetV3 supernets imported into edgenas: parity with OFA's reference
implementation (random weights everywhere; the real release files are not on this machine)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from once_for_all import OFAMobileNetV3, Subnet, get_space, load_supernet
from once_for_all.data import DataSpec
from once_for_all.ofa_import import (
    IMAGENET_SPEC,
    ImportedSupernet,
    import_ofa_file,
    ofa_name,
    write_imported,
)
from tests.support.ofa_supernets import condition, reference_supernet, save_reference

WIDTHS = (1.0, 1.2)
RESOLUTIONS = (128, 144, 176)
SUBNETS = 12


@dataclass
class Case:
    width: float
    reference: Any  # OFA's OFAMobileNetV3, randomised, eval mode
    path: Path  # its state dict as OFA's release files hold it
    imported: ImportedSupernet


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda w: f"w{w}")
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    width = request.param
    path = tmp_path_factory.mktemp("ofa") / f"ofa_mbv3_d234_e346_k357_w{width}"
    reference = save_reference(width, path, seed=int(width * 10))
    return Case(width, reference, path, import_ofa_file(path))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("width", WIDTHS)
def test_parameter_counts_equal_ofas(width: float) -> None:
    reference = reference_supernet(width)
    ours = OFAMobileNetV3(get_space(f"ofa-mbv3-w{width}"))
    assert _params(ours) == _params(reference)
    assert len(ours.state_dict()) == len(reference.state_dict()) == 475


def test_the_space_is_detected_from_the_file(case: Case) -> None:
    assert case.imported.space.id == get_space(f"ofa-mbv3-w{case.width}").id
    assert case.imported.width == f"{case.width}"
    assert case.imported.parameters == _params(case.reference)


def test_every_tensor_is_copied_as_it_is(case: Case) -> None:
    # No re-sorting, no transposition (OFA applies its kernel transforms as F.linear(flat,
    # matrix), as edgenas does), nothing dropped. (The file's: the reference's statistics
    # change as other tests condition subnets.)
    theirs = torch.load(case.path, weights_only=True)["state_dict"]
    state = case.imported.state
    assert {ofa_name(k) for k in state} == set(theirs)
    for key, tensor in state.items():
        assert torch.equal(tensor, theirs[ofa_name(key)]), key
    matrix = state["blocks.0.depthwise.transform_7to5"]
    assert not torch.equal(matrix, matrix.T)  # randomised: a transposed copy would show


def _conditioned(case: Case, net: OFAMobileNetV3, subnet: Subnet) -> None:
    """``subnet`` active in both supernets, the reference's BN statistics estimated for it by
    OFA (the file's were estimated for the largest), and ``net`` given them as the import maps
    each tensor (``test_every_tensor_is_copied_as_it_is``)."""
    case.reference.set_active_subnet(ks=list(subnet.ks), e=list(subnet.e), d=list(subnet.d))
    condition(case.reference, seed=len(subnet.key), resolution=subnet.r, images=4)
    theirs = case.reference.state_dict()
    net.load_state_dict({k: theirs[ofa_name(k)] for k in net.state_dict()})
    net.set_active(subnet)


def test_imported_supernet_computes_what_ofas_computes(case: Case, tmp_path: Path) -> None:
    # Through the checkpoint file, as every command loads it.
    write_imported(case.imported, tmp_path / "supernet.pt")
    net, _, _ = load_supernet(tmp_path / "supernet.pt")
    space = net.space
    rng = random.Random(0)
    torch.manual_seed(0)
    for r in RESOLUTIONS:
        subnets = [space.max_subnet(r=r), space.min_subnet(r=r)]
        subnets += [space.sample(rng, r=[r]) for _ in range(SUBNETS - 2)]
        for subnet in subnets:
            _conditioned(case, net, subnet)
            x = torch.randn(2, 3, r, r)
            with torch.no_grad():
                expected, actual = case.reference(x), net(x)
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5, msg=subnet.key)
            # the logits depend on the image, so a wrong early layer cannot hide
            assert float((expected[0] - expected[1]).abs().max()) > 1e-2, subnet.key


def test_extracted_subnets_compute_what_ofas_get_active_subnet_does(case: Case) -> None:
    # The network export writes, against OFA's own extraction, at the resolutions of OFA's
    # Note10 tables and accuracy predictor.
    space = case.imported.space
    net = OFAMobileNetV3(space)
    net.load_state_dict(case.imported.state)
    rng = random.Random(1)
    torch.manual_seed(1)
    for r in (160, 192, 224):
        for subnet in [space.max_subnet(r=r), space.min_subnet(r=r), space.sample(rng, r=[r])]:
            _conditioned(case, net, subnet)
            theirs = case.reference.get_active_subnet(preserve_weight=True).eval()
            ours = net.extract(subnet).eval()
            assert _params(ours) == _params(theirs)
            x = torch.randn(2, 3, r, r)
            with torch.no_grad():
                expected, actual = theirs(x), ours(x)
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5, msg=subnet.key)


def test_the_checkpoint_records_its_source_and_imagenet(case: Case, tmp_path: Path) -> None:
    write_imported(case.imported, tmp_path / "supernet.pt")
    _, spec, payload = load_supernet(tmp_path / "supernet.pt")
    assert payload["complete"] is True
    assert payload["optimizer"] is None and payload["history"] == []
    digest = hashlib.sha256(case.path.read_bytes()).hexdigest()
    assert payload["imported"] == {
        "source": "imported from OFA",
        "ofa_net_id": f"ofa_mbv3_d234_e346_k357_w{case.width}",
        "file": case.path.name,
        "sha256": digest,
    }
    assert spec == IMAGENET_SPEC == DataSpec.from_dict(IMAGENET_SPEC.to_dict())
    assert (spec.channels, spec.image_size, spec.num_classes) == (3, 224, 1000)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)


OLD_NESTING = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"))


def test_a_bare_state_dict_and_older_spellings_import_alike(case: Case, tmp_path: Path) -> None:
    # OFA's first releases named each block's layer mobile_inverted_conv and nested the
    # dynamic layers' conv and bn once (OFA's own loader renames both); some files are the
    # bare state dict rather than {"state_dict": ...}.
    def old_name(key: str) -> str:
        if not key.startswith("blocks."):
            return key
        key = key.replace(".conv.", ".mobile_inverted_conv.", 1)
        for new, old in OLD_NESTING:
            key = key.replace(new, old)
        return key

    # the file's tensors (the reference's own statistics change as tests condition subnets)
    saved = torch.load(case.path, weights_only=True)["state_dict"]
    old = {old_name(k): v for k, v in saved.items()}
    assert sum(".mobile_inverted_conv." in k for k in old) > 400
    assert sum(".bn.bn." in k for k in old) == 0
    torch.save(old, tmp_path / "old.pth")
    imported = import_ofa_file(tmp_path / "old.pth")
    assert imported.state.keys() == case.imported.state.keys()
    for key, tensor in imported.state.items():
        assert torch.equal(tensor, case.imported.state[key]), key
    # OFA's own loader takes the same file.
    reference = reference_supernet(case.width)
    reference.load_state_dict(old)
    for key, tensor in reference.state_dict().items():
        assert torch.equal(tensor, saved[key]), key
