"""Recipes: YAML files that say what to train, which devices to profile, how to search and
what to export; `edgenas run RECIPE` does the stages it lists.

Every key is checked at load time: an unknown key, a wrong type (strictly: ``true`` is not a
number, ``'yes'`` not a boolean) or a number out of bounds fails with the key's path.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from edgenas.search.accuracy_sources import AccuracySource
from edgenas.search.sampler_names import SamplerName
from edgenas.stages import STAGES, StageName
from export.formats import (
    DEVICE_CHECK_IMAGES,
    INT8_AGREEMENT_TARGET,
    MODEL_FORMATS,
    STEM_GROUPS,
    ChannelAlignmentChoice,
    ModelFormat,
    Precision,
)
from latency.predictors import MIN_CALIBRATION
from once_for_all import PhaseConfig, SearchSpace, TrainConfig, get_space, list_spaces, ofa_phases
from once_for_all.data import DataSpec
from once_for_all.data.image_stream import Holding
from once_for_all.errors import EdgenasError, yaml_problem
from once_for_all.progressive_shrinking import MAX_RATE
from once_for_all.training_devices import TrainingDevice
from once_for_all.unknown_keys import unknown_key
from once_for_all.yaml_text import load_yaml


class RecipeError(EdgenasError, ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    # Numbers must be finite: `lr: .inf` trained a NaN supernet and wrote it (issue 24). No
    # coercion (as device profiles): `val_size: true` trained with 1, `int8: 'yes'` exported
    # int8; an int is still a float (YAML writes `lr: 1` so).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


# numpy, torch and Optuna all take seeds in 0..2**32 - 1 (a bigger one crashed, the search's
# after training).
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
# A side of 4096 px is beyond any search space's resolution; 100000 crashed the allocator.
MAX_IMAGE_SIZE = 4096
# torch threads (a recipe's train.threads, --threads of edgenas run and train): 10**9 aborted
# in OpenMP's allocator.
MAX_THREADS = 1024


class DataSection(_Strict):
    source: str = "fashion-mnist"
    val_size: int = Field(5000, ge=1)  # training and search measure accuracy on them
    train_limit: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=8, le=MAX_IMAGE_SIZE)
    seed: Seed = 0
    # Training reads a folder from disk batch by batch ("stream") or decodes it into memory;
    # "auto" streams one that would take more than 2 GiB decoded (image_stream.streams).
    stream: Holding = "auto"

    def load_kwargs(self) -> dict[str, Any]:
        """``load_data``'s keyword arguments."""
        return self.model_dump(exclude={"stream"})


# TrainConfig's settings (every field but the phases, with its default and bounds) are keys
# of the recipe's train section, declared there only; so are PhaseConfig's fields the keys of
# a phase, in a model of their own so that they are as strict as the rest of the recipe (a
# dataclass field of a strict model takes instances only).
_SETTINGS = [f for f in dataclasses.fields(TrainConfig) if f.name != "phases"]
_PHASE_FIELDS = dataclasses.fields(PhaseConfig)


class _PhaseBase(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, value: Any) -> Any:
        # YAML has lists where the dataclass has tuples; a PhaseConfig is taken as its fields.
        if isinstance(value, PhaseConfig):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return value


if TYPE_CHECKING:
    # mypy cannot follow create_model; train_config reads the settings by name
    _TrainSettings = _Strict
    _PhaseKeys = _PhaseBase
else:
    _hints = get_type_hints(TrainConfig, include_extras=True)
    _TrainSettings = create_model(
        "_TrainSettings",
        __base__=_Strict,
        **{f.name: (_hints[f.name], f.default) for f in _SETTINGS},
    )
    _phase_hints = get_type_hints(PhaseConfig, include_extras=True)
    _PhaseKeys = create_model(
        "_PhaseKeys",
        __base__=_PhaseBase,
        **{
            f.name: (_phase_hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
            for f in _PHASE_FIELDS
        },
    )


def _as_phase(keys: _PhaseKeys) -> PhaseConfig:
    """The phase the checked keys describe (``PhaseConfig`` checks how they combine)."""
    phase = PhaseConfig(**{f.name: getattr(keys, f.name) for f in _PHASE_FIELDS})
    if phase.warmup_epochs > phase.epochs:
        raise ValueError(
            f"warmup_epochs: {phase.warmup_epochs:g} is more than the phase's {phase.epochs} "
            f"epoch(s): warm up for at most {phase.epochs}"
        )
    return phase


if TYPE_CHECKING:
    _Phase = PhaseConfig
else:
    _Phase = Annotated[_PhaseKeys, AfterValidator(_as_phase), PlainSerializer(dataclasses.asdict)]


class TrainSection(_TrainSettings):
    """A recipe's ``train`` section: ``TrainConfig``'s settings, the phases (or OFA's schedule),
    and where and on how many threads to train."""

    seed: Seed = 0  # TrainConfig's, bounded as every seed
    threads: int = Field(2, ge=1, le=MAX_THREADS)
    # auto: this process's GPU where torch sees one (torchrun: one process per GPU, NCCL),
    # else the CPU; cpu or cuda to insist. Not part of the schedule: a run may resume elsewhere.
    device: TrainingDevice = "auto"
    # Either explicit phases, or OFA's default schedule from six epoch counts and a base lr.
    # Each phase is a once_for_all PhaseConfig: its fields are the keys, its bounds and checks apply.
    phases: list[_Phase] | None = Field(None, min_length=1)
    epochs: list[int] | None = Field(None, min_length=6, max_length=6)
    lr: float | None = Field(None, gt=0, le=MAX_RATE)
    # A supernet.pt (edgenas train's, or edgenas import ofa-supernet's) to start from instead
    # of random weights: its space but for the classes; the classifier starts afresh for other
    # classes. Relative paths are from where edgenas runs.
    init_from: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _schedule_given(self) -> TrainSection:
        if self.phases is None and (self.epochs is None or self.lr is None):
            raise ValueError(
                "give either 'phases' or both 'epochs' (six counts) and 'lr' for OFA's default schedule"
            )
        if self.phases is not None and (self.epochs is not None or self.lr is not None):
            raise ValueError("'phases' and 'epochs'/'lr' are alternatives: keep one")
        if self.phases and self.phases[0].kd_ratio > 0 and self.init_from is None:
            # From init_from, the loaded largest subnet can teach from the start.
            raise ValueError(
                "the first phase trains the teacher: set its kd_ratio to 0 (or start from a "
                "trained supernet: init_from)"
            )
        return self


class DeviceSection(_Strict):
    """A target: a bundled device profile or a profile YAML, and its latency budget."""

    name: str
    # One budget, or several for one device (OFA's tutorial: [15, 18, 23, 32] on the Note10):
    # the search is constrained by the largest and a subnet is chosen under each.
    budget_ms: float | list[float] | None = None
    format: ModelFormat | None = None  # what the device measures (its default)
    precision: Precision | None = None
    calibrate: int = Field(40, ge=0)  # subnets measured end to end for the calibrated predictor
    resolution: list[int] | None = Field(None, min_length=1)  # profile only these resolutions
    per_op: bool = False  # also store each block's per-op times (edgenas profile --per-op)
    # A published device's tables (samsung-note10: the folder of OFA's Note10 YAML files),
    # imported instead of measured; relative paths are from where edgenas runs.
    tables: str | None = Field(None, min_length=1)

    @field_validator("budget_ms", mode="before")
    @classmethod
    def _positive_budgets(cls, value: Any) -> Any:
        # Checked before the float-or-list union, whose own errors would name both branches.
        if value is None:
            return value
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("give at least one budget in ms, or leave budget_ms out")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{v!r} is not a finite number of ms")
            if v <= 0:
                raise ValueError(f"{v} is not a positive budget in ms")
        if len(set(values)) != len(values):
            raise ValueError("each budget once")
        return value

    def budgets(self) -> float | tuple[float, ...] | None:
        """The budget as the search stage takes it."""
        return tuple(self.budget_ms) if isinstance(self.budget_ms, list) else self.budget_ms

    @model_validator(mode="after")
    def _enough_to_calibrate(self) -> DeviceSection:
        if 0 < self.calibrate < MIN_CALIBRATION:
            raise ValueError(
                f"calibrate: {self.calibrate} subnets cannot fit a calibrated predictor; give "
                f"0 (lut-sum only) or at least {MIN_CALIBRATION}"
            )
        return self


class SearchSection(_Strict):
    trials: int = Field(2000, ge=1)
    sampler: SamplerName = "nsga2"
    accuracy: AccuracySource = "predictor"
    # OFA's acc_predictor.pth, for accuracy ofa-predictor (OFA's tutorial downloads it from
    # https://raw.githubusercontent.com/han-cai/files/master/ofa/acc_predictor.pth).
    ofa_predictor: str | None = Field(None, min_length=1)
    accuracy_samples: int = Field(100, ge=10)
    eval_images: int | None = Field(None, ge=1)
    reevaluate: int = Field(20, ge=1)
    seed: Seed = 0

    @model_validator(mode="after")
    def _ofa_predictor_given(self) -> SearchSection:
        if (self.accuracy == "ofa-predictor") != (self.ofa_predictor is not None):
            raise ValueError(
                "accuracy: ofa-predictor and ofa_predictor: PATH (OFA's acc_predictor.pth) "
                "go together"
            )
        return self


class ExportSection(_Strict):
    formats: list[ModelFormat] = Field(list(MODEL_FORMATS), min_length=1)
    int8: bool = True
    qat_epochs: int = Field(0, ge=0)
    finetune_epochs: int = Field(0, ge=0)
    calibration_images: int = Field(256, ge=1)
    # The stem's int8 tensors in this many groups of channels by range, each with its scale;
    # "auto": whole, and 2 for a file that then misses min_int8_agreement, if that agrees better.
    stem_groups: Annotated[int, Field(ge=1)] | Literal["auto"] = STEM_GROUPS
    # int8 ONNX channels padded to onnxruntime's int8 convs on x86 or arm64, or none; auto:
    # for the CPU of the devices that run the file on onnxruntime.
    align_channels: ChannelAlignmentChoice = "auto"
    test_images: int | None = Field(None, ge=1)
    # Test images each device classifies with the files it measured (0: none).
    device_check_images: int = Field(DEVICE_CHECK_IMAGES, ge=0)
    # A file is recommended (the fastest such) from this top-1 agreement with fp32 on: an
    # int8 file's, and on a device that checked the files, every file's agreement there.
    min_int8_agreement: float = Field(INT8_AGREEMENT_TARGET, ge=0, le=1)

    @field_validator("formats")
    @classmethod
    def _each_format_once(cls, value: list[ModelFormat]) -> list[ModelFormat]:
        # Twice, every file was exported, measured and listed twice.
        twice = next((f for i, f in enumerate(value) if f in value[:i]), None)
        if twice is not None:
            raise ValueError(f"{twice} is named twice: give each format once")
        return value

    @field_validator("stem_groups", mode="before")
    @classmethod
    def _groups_or_auto(cls, value: Any) -> Any:
        # Checked before the int-or-auto union, whose own errors would name both branches.
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"{_given(value)} is not a number of groups: give 1 or more, or auto")

    @model_validator(mode="after")
    def _int8_settings_need_int8(self) -> ExportSection:
        # They shape the int8 files only: with int8 off they would do nothing, unseen.
        if not self.int8:
            fields = type(self).model_fields
            given = [
                name
                for name in INT8_SETTINGS
                if name in self.model_fields_set and getattr(self, name) != fields[name].default
            ]
            if given:
                raise ValueError(
                    f"{given[0]} shapes the int8 files, and int8 is false: set int8: true, or "
                    f"leave {given[0]} out"
                )
        return self


# The export settings that shape int8 files only.
INT8_SETTINGS = (
    "qat_epochs",
    "calibration_images",
    "stem_groups",
    "align_channels",
)


class SpaceSection(_Strict):
    """A built-in space adapted to the data: its input channels and number of classes."""

    name: str
    in_channels: int | None = Field(None, ge=1)
    num_classes: int | None = Field(None, ge=2)


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # A built-in space's name, or {name, in_channels, num_classes} to fit another dataset.
    space: Annotated[
        Annotated[str, Tag("name")] | Annotated[SpaceSection, Tag("adapted")],
        Discriminator(lambda v: "name" if isinstance(v, str) else "adapted"),
    ] = "mbv3-tiny"
    data: DataSection = DataSection()
    # Needed by the train stage only: a run folder whose supernet.pt was imported
    # (edgenas import ofa-supernet) has none.
    train: TrainSection | None = None
    # Default: every stage when devices are given, else training only.
    stages: list[StageName] | None = Field(None, min_length=1)
    devices: list[DeviceSection] = []
    search: SearchSection = SearchSection()
    export: ExportSection = ExportSection()

    @property
    def planned_stages(self) -> list[StageName]:
        if self.stages is not None:
            return [s for s in STAGES if s in self.stages]
        return list(STAGES) if self.devices else ["train"]

    @model_validator(mode="after")
    def _stages_have_what_they_need(self) -> Recipe:
        if "train" in self.planned_stages and self.train is None:
            raise ValueError(
                "stage train needs a 'train' section; for a supernet you imported (edgenas "
                "import ofa-supernet), leave train out of 'stages'"
            )
        needs_devices = [s for s in self.planned_stages if s in ("profile", "search")]
        if needs_devices and not self.devices:
            raise ValueError(f"stage {needs_devices[0]} needs at least one entry under 'devices'")
        if "export" in self.planned_stages and not any(d.budget_ms for d in self.devices):
            raise ValueError(
                "stage export ships the subnet chosen under a budget: give a device a budget_ms"
            )
        if (
            "search" in self.planned_stages
            and self.search.sampler == "guided"
            and not any(d.budget_ms for d in self.devices)
        ):  # found after training and profiling, and worded for the command line
            raise ValueError(
                "search.sampler: guided searches under latency budgets: give the devices a "
                "budget_ms, or choose another sampler"
            )
        budgets = {d.budget_ms is None for d in self.devices}
        if len(budgets) > 1:
            raise ValueError("devices: give every device a budget_ms, or none (a joint search)")
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("devices: each device once (several budgets: budget_ms: [15, 18, 23])")
        return self

    def search_space(self) -> SearchSpace:
        section = (
            self.space if isinstance(self.space, SpaceSection) else SpaceSection(name=self.space)
        )
        try:
            space = get_space(section.name)
        except ValueError as exc:
            raise RecipeError(f"recipe {self.name!r}: space: {exc}") from None
        # The same values leave the space (and its id) unchanged.
        return dataclasses.replace(
            space,
            in_channels=section.in_channels or space.in_channels,
            num_classes=section.num_classes or space.num_classes,
        )

    def check_export(self) -> None:
        """Fail before training when export could not write the stem in the groups asked for
        (it used to fail after training and search)."""
        from latency.blocks import check_split_stems

        groups = self.export.stem_groups
        if isinstance(groups, int):
            try:
                check_split_stems(self.search_space(), [groups])
            except ValueError as exc:
                raise RecipeError(f"recipe {self.name!r}: export.stem_groups: {exc}") from None

    def check_search(self) -> None:
        """Fail before training when OFA's accuracy predictor cannot score the space."""
        from once_for_all.accuracy_predictor import AccuracyPredictorError
        from once_for_all.ofa_accuracy_predictor import check_ofa_space

        if self.search.accuracy == "ofa-predictor":
            try:
                check_ofa_space(self.search_space())
            except AccuracyPredictorError as exc:
                raise RecipeError(
                    f"recipe {self.name!r}: search.accuracy: ofa-predictor: {exc}"
                ) from None

    def check_data(self, spec: DataSpec) -> None:
        """Fail before training when the data does not fit the space's input or classifier."""
        space = self.search_space()
        if (spec.channels, spec.num_classes) != (space.in_channels, space.num_classes):
            name = space.name
            raise RecipeError(
                f"recipe {self.name!r}: data {spec.name!r} has {spec.channels} channel(s) and "
                f"{spec.num_classes} classes, space {name} takes {space.in_channels} and "
                f"{space.num_classes}: set space: {{name: {name}, in_channels: {spec.channels}, "
                f"num_classes: {spec.num_classes}}}"
            )

    def train_config(self) -> TrainConfig:
        space = self.search_space()
        t = self.train
        if t is None:
            raise RecipeError(f"recipe {self.name!r} has no train section")
        if t.phases is None:
            assert t.epochs is not None and t.lr is not None
            e = t.epochs
            phases = ofa_phases(space=space, epochs=(e[0], e[1], e[2], e[3], e[4], e[5]), lr=t.lr)
        else:
            phases = tuple(_within_space(space, p) for p in t.phases)
        return TrainConfig(phases=phases, **{f.name: getattr(t, f.name) for f in _SETTINGS})


def _within_space(space: SearchSpace, phase: PhaseConfig) -> PhaseConfig:
    """``phase`` with its choices checked against ``space``; an empty list reads as none given."""
    allowed = {"ks": space.kernel_sizes, "e": space.expand_ratios, "d": space.depths}
    choices = {"ks": phase.ks, "e": phase.e, "d": phase.d}
    for key, values in choices.items():
        bad = [v for v in values or [] if v not in allowed[key]]
        if bad:
            raise RecipeError(
                f"train.phases[{phase.name}].{key}: {bad} not in space {space.name} (allowed {list(allowed[key])})"
            )
    return dataclasses.replace(phase, ks=phase.ks or None, e=phase.e or None, d=phase.d or None)


# YAML has lists where a phase has tuples.
_AS_FOR_MODELS = {"tuple_type": "Input should be a valid list"}
# The keys of each section, for a section given as something else than a mapping (pydantic
# names the class: "a valid dictionary or instance of DataSection").
_SECTION_KEYS = {
    model.__name__: list(model.model_fields)
    for model in (
        DataSection,
        TrainSection,
        _PhaseKeys,
        DeviceSection,
        SearchSection,
        ExportSection,
        SpaceSection,
    )
}


def _given(value: Any) -> str:
    """A value as the recipe's YAML wrote it, for an error message."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value) if isinstance(value, str | int | float) else type(value).__name__


def _where(loc: tuple[int | str, ...]) -> str:
    """A key's path as the recipe's YAML reads: ``devices[0].budget_ms``."""
    # The branch of the space's union (a name, or a section adapting one) is not a key.
    if loc[:2] in (("space", "name"), ("space", "adapted")):
        loc = loc[:1] + loc[2:]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _problem(err: ErrorDetails) -> str:
    """What is wrong at ``err``'s key, in the recipe's terms rather than pydantic's."""
    kind, given, loc = err["type"], err.get("input"), err["loc"]
    if kind == "value_error":  # the validators' own messages, without "Value error, "
        return str(err.get("ctx", {}).get("error", err["msg"]))
    if kind == "extra_forbidden":
        return unknown_key(Recipe, loc)
    if loc[:2] == ("space", "adapted") and len(loc) == 2:
        return (
            f"give a built-in space's name ({', '.join(list_spaces())}) or a space file, or "
            f"{{name: SPACE, in_channels: N, num_classes: N}} to adapt one; not {_given(given)}"
        )
    keys = _SECTION_KEYS.get(str(err.get("ctx", {}).get("class_name")))
    if kind in ("model_type", "model_attributes_type") and keys:
        return f"give a mapping of its keys ({', '.join(keys)}); not {_given(given)}"
    if isinstance(given, float) and not math.isfinite(given):
        return "Input should be a finite number"  # strict ints say "a valid integer"
    msg = _AS_FOR_MODELS.get(kind, err["msg"])
    return f"{msg}, not {_given(given)}" if kind.endswith("_type") else msg


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    try:
        raw = load_yaml(p.read_text())
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {p}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RecipeError(
            f"recipe {p} is not a text file (not UTF-8): give a recipe YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {p} is not valid YAML{yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {p} must be a mapping of sections (name, space, data, train)")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = f"{_where(err['loc'])}: " if err["loc"] else ""
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise RecipeError(f"recipe {p}: {where}{_problem(err)}{more}") from None
    if recipe.train is not None:
        recipe.train_config()  # checks phase choices against the space now, not mid-run
    return recipe
