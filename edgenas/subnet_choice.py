"""Reading a subnet from the command line: ``max``, ``min``, ``random``, a subnet JSON file
(edgenas's, or OFA's arch dict ``{"ks", "e", "d", "r": [r], "wid": null}`` for the space at
hand), or a member of a search's front: ``pareto.json#K`` (front index K) or ``pareto.json``
(the subnet chosen under the budget, when the search chose one)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from once_for_all import SearchSpace, Subnet


def choose_subnet(
    choice: str,
    space: SearchSpace,
    *,
    seed: int = 0,
    resolutions: Sequence[int] | None = None,
) -> Subnet:
    """The subnet ``choice`` names. ``resolutions`` (default: the space's) are where max,
    min and random may be: a predictor's table may cover only some (OFA's Note10 tables:
    160-224 px of a space that starts at 128)."""
    from once_for_all import Subnet, SubnetError
    from once_for_all.subnet import is_ofa_arch

    rs = tuple(resolutions) if resolutions else None
    if choice == "max":
        return space.max_subnet(r=max(rs) if rs else None)
    if choice == "min":
        return space.min_subnet(r=min(rs) if rs else None)
    if choice == "random":
        return space.sample(random.Random(seed), r=rs)
    path, hashed, member = choice.partition("#")
    if hashed and path in ("max", "min", "random"):
        raise SubnetError(
            f"{choice}: '#K' picks a member of a pareto.json's front; {path} takes none (give "
            f"{path}, or a pareto.json#K)"
        )
    if hashed and not member:
        raise SubnetError(
            f"{choice}: give the front member's number after '#' ({path}#0, ...), or leave "
            "out the '#' for the chosen subnet"
        )
    document = _read_json(Path(path))
    if isinstance(document, dict) and str(document.get("format", "")).startswith("edgenas.pareto/"):
        from edgenas.search.pareto import PARETO_FORMAT, check_pareto

        if document["format"] != PARETO_FORMAT:
            raise SubnetError(
                f"{path} is a pareto.json of format {document['format']}; this edgenas reads "
                f"{PARETO_FORMAT}: rerun the search with this version"
            )
        if document.get("space") not in (None, space.id):
            # Not "the supernet's": a search that OFA's predictor scores has none (walk-through).
            raise SubnetError(
                f"{path} is a front of space {document['space']}, not of {space.id}, which "
                f"this command works in: give the pareto.json of a search in {space.id}"
            )
        check_pareto(document, path, error=SubnetError)  # a hand-edited one gave KeyErrors
        document = _front_member(document, path, member)
    elif member:
        raise SubnetError(f"{path} is not a pareto.json: '#{member}' picks a front member of one")
    try:
        if is_ofa_arch(document):  # OFA's own output, e.g. its EvolutionFinder's best arch
            return space.validate(Subnet.from_ofa(document, space.id))
        return space.validate(Subnet.from_dict(document))
    except SubnetError as exc:  # say which file: a command may read several
        raise SubnetError(f"subnet file {choice}: {exc}") from None


def searched_supernet(choice: str) -> str | None:
    """The fingerprint (``supernet_fingerprint``) of the supernet whose accuracies the front
    of ``choice`` holds, where ``choice`` is a pareto.json that records it (searches on a
    supernet's own accuracies, since it did); None for anything else. ``choose_subnet`` has
    read and checked the file by now."""
    if choice in ("max", "min", "random"):
        return None
    document = _read_json(Path(choice.partition("#")[0]))
    if isinstance(document, dict) and isinstance(document.get("supernet"), str):
        return str(document["supernet"])
    return None


def _read_json(path: Path) -> Any:
    from once_for_all import SubnetError

    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise SubnetError(
            f"cannot read subnet file {path}: {exc.strerror}; give max, min, random, a subnet "
            "JSON file or pareto.json#K"
        ) from None
    except UnicodeDecodeError:
        raise SubnetError(
            f"{path} is not a text file (not UTF-8): give a subnet JSON file or pareto.json#K"
        ) from None
    except json.JSONDecodeError as exc:
        raise SubnetError(f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None


def _front_member(document: dict[str, Any], path: str, member: str) -> Any:
    from once_for_all import SubnetError

    front, chosen = document.get("front") or [], document.get("chosen") or []
    if not front:
        raise SubnetError(
            f"{path} holds no front member: its search kept no subnet; search again (more "
            "trials, or looser budgets)"
        )
    if not member:
        # One subnet chosen for several budgets (or devices) is still one subnet.
        budgets: dict[int, list[str]] = {}
        for c in chosen:
            budgets.setdefault(c["index"], []).append(f"{c['device']} <= {c['budget_ms']:g} ms")
        if len(budgets) != 1:
            picks = ", ".join(f"#{i} ({', '.join(b)})" for i, b in budgets.items())
            raise SubnetError(
                f"{path} holds {len(budgets)} chosen subnets{': ' + picks if picks else ''}; "
                f"pick one with {path}#K (K from 0 to {len(front) - 1})"
            )
        member = str(next(iter(budgets)))
    # isdigit() also takes "²", which int() refuses with a traceback
    if not (member.isascii() and member.isdigit()) or int(member) >= len(front):
        number = member.isascii() and member.isdigit()
        what = "is past the front" if number else "is not a member's number"
        raise SubnetError(
            f"{path}#{member}: '{member}' {what}; the front has {len(front)} members, use #0 "
            f"to #{len(front) - 1}"
        )
    return front[int(member)]["subnet"]
