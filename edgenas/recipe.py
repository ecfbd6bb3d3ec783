"""Recipes: YAML files that say what to train (and, later, profile, search and export).

Every key is checked at load time: an unknown key or a wrong type fails with the key's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from once_for_all import PhaseConfig, SearchSpace, TrainConfig, get_space, ofa_phases


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Strict):
    source: str = "fashion-mnist"
    val_size: int = Field(5000, ge=0)
    train_limit: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=8)
    seed: int = Field(0, ge=0)

    def load_kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class PhaseSection(_Strict):
    name: str
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    ks: list[int] | None = None
    e: list[int] | None = None
    d: list[int] | None = None
    subnets_per_step: int = Field(1, ge=1)
    kd_ratio: float = Field(1.0, ge=0)
    sort_channels: bool = False
    sandwich: bool = False


class TrainSection(_Strict):
    seed: int = Field(0, ge=0)
    threads: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-5, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: bool = True
    eval_images: int = Field(2000, ge=1)
    bn_images: int = Field(1000, ge=1)
    # Either explicit phases, or OFA's default schedule from six epoch counts and a base lr.
    phases: list[PhaseSection] | None = None
    epochs: list[int] | None = Field(None, min_length=6, max_length=6)
    lr: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _schedule_given(self) -> TrainSection:
        if self.phases is None and (self.epochs is None or self.lr is None):
            raise ValueError(
                "give either 'phases' or both 'epochs' (six counts) and 'lr' for OFA's default schedule"
            )
        if self.phases is not None and (self.epochs is not None or self.lr is not None):
            raise ValueError("'phases' and 'epochs'/'lr' are alternatives: keep one")
        if self.phases and self.phases[0].kd_ratio > 0:
            raise ValueError("the first phase trains the teacher: set its kd_ratio to 0")
        return self


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    space: str = "mbv3-tiny"
    data: DataSection = DataSection()
    train: TrainSection

    def search_space(self) -> SearchSpace:
        try:
            return get_space(self.space)
        except ValueError as exc:
            raise RecipeError(f"recipe {self.name!r}: space: {exc}") from None

    def train_config(self) -> TrainConfig:
        space = self.search_space()
        t = self.train
        if t.phases is None:
            assert t.epochs is not None and t.lr is not None
            e = t.epochs
            phases = ofa_phases(space=space, epochs=(e[0], e[1], e[2], e[3], e[4], e[5]), lr=t.lr)
        else:
            phases = tuple(_phase(space, p) for p in t.phases)
        return TrainConfig(
            phases=phases,
            batch_size=t.batch_size,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            label_smoothing=t.label_smoothing,
            seed=t.seed,
            augment=t.augment,
            eval_images=t.eval_images,
            bn_images=t.bn_images,
        )


def _phase(space: SearchSpace, p: PhaseSection) -> PhaseConfig:
    allowed = {"ks": space.kernel_sizes, "e": space.expand_ratios, "d": space.depths}
    for key, values in (("ks", p.ks), ("e", p.e), ("d", p.d)):
        bad = [v for v in values or [] if v not in allowed[key]]
        if bad:
            raise RecipeError(
                f"train.phases[{p.name}].{key}: {bad} not in space {space.name} (allowed {list(allowed[key])})"
            )
    return PhaseConfig(
        name=p.name,
        epochs=p.epochs,
        lr=p.lr,
        warmup_epochs=p.warmup_epochs,
        ks=tuple(p.ks) if p.ks else None,
        e=tuple(p.e) if p.e else None,
        d=tuple(p.d) if p.d else None,
        subnets_per_step=p.subnets_per_step,
        kd_ratio=p.kd_ratio,
        sort_channels=p.sort_channels,
        sandwich=p.sandwich,
    )


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {p} must be a mapping of sections (name, space, data, train)")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise RecipeError(f"recipe {p}: {where}: {err['msg']}{more}") from None
    recipe.train_config()  # checks phase choices against the space now, not mid-run
    return recipe
