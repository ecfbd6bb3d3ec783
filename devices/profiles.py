"""Device profiles: YAML files that say what a target is and how to measure on it.

Bundled profiles live in ``devices/profiles/<name>.yaml``; a user's profile is any YAML path.
Every key is checked at load time: an unknown key or a wrong type fails with the key's path.
Secrets never live in a profile: SSH keys and agents are found the way OpenSSH finds them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.base import LATENCY_ONLY, Device, DeviceError, Runtime, create_device
from devices.runner_protocol import RunSettings, classify_refusal
from devices.trtexec import JETPACK_TRTEXEC, Precision
from once_for_all.errors import yaml_problem
from once_for_all.unknown_keys import unknown_key
from once_for_all.yaml_text import load_yaml

DeviceKind = Literal["local", "ssh", "adb", "npu-sim", "vela", "published"]
_DEFAULTS = RunSettings()
# Kinds that measure with the Python on-device runner (runner.py).
_RUNNER_KINDS = ("local", "ssh")
# Kinds whose devices classify images (``Device.classify_refusal``): the runner's and phones'; the
# simulators return latency only.
_CLASSIFYING_KINDS = (*_RUNNER_KINDS, "adb")
OptionValue = str | int | float | bool
# Short names for onnxruntime's execution providers; any "...ExecutionProvider" is taken too.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "acl": "ACLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "dml": "DmlExecutionProvider",
}
DELEGATE_PATTERN = r"^(xnnpack|none|gpu|nnapi|external:.+)$"
# Upper bounds, so that a typo fails here and not as an allocation failure or a hang on the
# device: onnxruntime and LiteRT allocate per thread (10**9 threads: std::bad_alloc); the
# runner keeps every timed run; Python's timeouts overflow from about 10**10 s.
MAX_THREADS = 1024
MAX_RUNS = 100_000  # runs, and warmup runs
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # one runner call or batch
MAX_CONNECT_S = 3600.0  # connecting, and keepalives
MAX_RECONNECTS = 100
MAX_WARMUP_MS = 600_000  # trtexec's warmup


T = TypeVar("T")


def _listed_twice(items: list[T]) -> list[T]:
    """The items that appear more than once, in the order they repeat."""
    seen: set[T] = set()
    twice = []
    for item in items:
        if item in seen:
            twice.append(item)
        seen.add(item)
    return twice


def _same_provider_twice(key: str, given: list[str]) -> str | None:
    """Why ``given`` (providers, or provider_options' keys) names one provider twice, by
    the same name or by its alias and its full name; None where it does not."""
    names = [provider_name(p) for p in given]
    twice = _listed_twice(names)
    if not twice:
        return None
    same = [p for p in given if provider_name(p) == twice[0]]
    if len(set(same)) == 1:
        return f"{key}: {same[0]} is listed twice; list it once"
    return f"{key}: {' and '.join(same)} name the same provider, {twice[0]}; list it once"


def provider_name(name: str) -> str:
    """onnxruntime's name for an execution provider given by alias or full name."""
    if name.endswith("ExecutionProvider"):
        return name
    if name.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[name.lower()]
    raise ValueError(
        f"unknown execution provider {name!r}: give onnxruntime's name "
        f"(...ExecutionProvider) or one of {', '.join(PROVIDER_ALIASES)}"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LocalSection(_Strict):
    """kind ``local``: which Python runs the runner (this one unless given)."""

    python: str | None = Field(None, min_length=1)  # '' failed as "Permission denied"
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)


class SshSection(_Strict):
    """kind ``ssh``: ``host`` is an alias from ~/.ssh/config or a host name; ``user``,
    ``port``, ``key_file`` and ``known_hosts`` override the config. No password field: keys
    and agents are found as OpenSSH finds them.

    ``known_hosts`` replaces ~/.ssh/known_hosts (the system file is read as well) and is
    where ``edgenas devices trust`` writes. ``command_timeout`` bounds one runner call, which
    measures at most ``batch_size`` models; a dropped connection is re-opened up to
    ``max_reconnects`` times per batch. ``remote_tmpdir`` is the folder on the device in which
    a fresh temporary folder is made (default: the device's $TMPDIR, else /tmp)."""

    host: str = Field(min_length=1)
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    key_file: str | None = None
    known_hosts: str | None = None
    allow_agent: bool = True
    look_for_keys: bool = True
    python: str = Field("python3", min_length=1)
    connect_timeout: float = Field(10.0, gt=0, le=MAX_CONNECT_S, allow_inf_nan=False)
    command_timeout: float = Field(600.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    keepalive_s: float = Field(15.0, gt=0, le=MAX_CONNECT_S, allow_inf_nan=False)
    batch_size: int = Field(32, ge=1)
    max_reconnects: int = Field(3, ge=0, le=MAX_RECONNECTS)
    remote_tmpdir: str | None = None

    @field_validator("host")
    @classmethod
    def _host_alone(cls, host: str) -> str:
        if "@" in host:  # it was looked up as a host name: "cannot resolve host name"
            user, _, name = host.rpartition("@")
            raise ValueError(f"{host!r}: give the host alone ({name!r}) and ssh.user: {user!r}")
        return host


class AdbSection(_Strict):
    """kind ``adb``: an Android phone reached with the ``adb`` command, measured by TFLite's
    ``benchmark_model``. ``benchmark_model`` is the path of the binary on this computer (an
    Android build for the phone's ABI; see the README for where to get it); it is pushed with
    the models into a fresh folder under ``remote_tmpdir`` and removed afterwards.

    ``serial`` picks the phone (``adb devices -l``; needed when several are attached).
    ``adb`` is the adb command and ``server_port`` its server's port (adb's ``-P``; default
    5037). ``command_timeout`` bounds one batch of ``batch_size`` models, and one part of
    the images that a file classifies (up to 250, a benchmark_model process each); after a
    dropped connection the device waits up to ``connect_timeout`` for the phone, at most
    ``max_reconnects`` times per batch."""

    benchmark_model: str = Field(min_length=1)
    serial: str | None = Field(None, min_length=1)
    adb: str = Field("adb", min_length=1)
    server_port: int | None = Field(None, ge=1, le=65535)
    remote_tmpdir: str = Field("/data/local/tmp", pattern=r"^/")
    connect_timeout: float = Field(30.0, gt=0, le=MAX_CONNECT_S, allow_inf_nan=False)
    command_timeout: float = Field(600.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    batch_size: int = Field(16, ge=1)
    max_reconnects: int = Field(3, ge=0, le=MAX_RECONNECTS)


class TensorrtSection(_Strict):
    """runtime ``tensorrt``: NVIDIA's ``trtexec`` on the target builds an engine from each
    ONNX model and times it. ``trtexec`` is its path there (JetPack: package libnvinfer-bin,
    /usr/src/tensorrt/bin/trtexec, not on PATH); ``precision`` the engine's (``int8``
    calibrates on random data: right for latency only); ``warmup_ms`` trtexec's warmup,
    in milliseconds (it counts no warmup runs; the profile's ``warmup`` does not apply)."""

    trtexec: str = Field(JETPACK_TRTEXEC, min_length=1)
    precision: Precision = "fp16"
    warmup_ms: int = Field(500, ge=0, le=MAX_WARMUP_MS)


class OpenvinoSection(_Strict):
    """runtime ``openvino``: Intel's OpenVINO runtime itself (the ``openvino`` package), which
    reads the ONNX files. ``device`` is one of OpenVINO's devices (``CPU``, ``GPU``, ``GPU.1``,
    ``NPU``; a virtual one such as AUTO or HETERO may run a model elsewhere, so it is refused);
    ``properties`` are compile properties over the runner's (the latency hint; on the CPU the
    profile's threads, one stream, no pinning of OpenVINO's own; on the CPU and GPU fp32
    inference precision), e.g. ``INFERENCE_PRECISION_HINT: bf16``."""

    device: str = Field("CPU", pattern=r"^[A-Z][A-Z0-9_]*(\.[0-9]+)?$")
    properties: dict[str, OptionValue] | None = None

    @field_validator("properties")
    @classmethod
    def _not_the_profiles_own(
        cls, properties: dict[str, OptionValue] | None
    ) -> dict[str, OptionValue] | None:
        if properties and "INFERENCE_NUM_THREADS" in properties:
            # The fingerprint's threads would say otherwise.
            raise ValueError("INFERENCE_NUM_THREADS: give the profile's threads instead")
        return properties

    @field_validator("device")
    @classmethod
    def _one_device(cls, device: str) -> str:
        if device.split(".")[0] in ("AUTO", "HETERO", "MULTI", "BATCH"):
            raise ValueError(
                f"{device!r} is a virtual device, which may run a model on another device "
                "than the one named: give one device (CPU, GPU, GPU.1, NPU)"
            )
        return device


class VelaSection(_Strict):
    """kind ``vela``: the options of Arm's Vela compiler for Ethos-U. ``config`` is a Vela
    ``.ini`` file that defines the system config and memory mode (Vela's own ``Arm/vela.ini``
    unless given)."""

    accelerator_config: str = Field(pattern=r"^ethos-u(55|65|85)-\d+$")
    system_config: str = Field(min_length=1)
    memory_mode: str = Field(min_length=1)
    config: str | None = Field(None, min_length=1)


class PublishedSection(_Strict):
    """kind ``published``: latency tables someone else measured and published, which edgenas
    imports instead of measuring (``edgenas profile DEVICE --tables DIR``). ``format`` says
    how the tables are written (``ofa``: OFA's LatencyEstimator YAML, one file per input
    resolution, named by ``files`` with ``{r}`` for the resolution); ``url`` is where they
    were published, and goes into the table's fingerprint with the files' sha256."""

    format: Literal["ofa"]
    url: str = Field(min_length=1)
    files: str = Field(pattern=r"\{r\}")
    resolutions: list[int] = Field(min_length=1)
    measured_on: str = Field(min_length=1)  # the device the publisher measured


# The keys of the on-device runner's kinds (local, ssh) that other kinds do not use, and why
# not; a profile that gives one is refused, so that nothing in it is silently ignored.
_MEASURE_KEYS = ("threads", "cores", "x86_amx", "warmup", "runs", "spread_threshold")
_RUNNER_KEYS = frozenset(
    (
        *_MEASURE_KEYS,
        "delegate",
        "delegate_options",
        "providers",
        "provider_options",
        "tensorrt",
        "openvino",
    )
)
_UNUSED_KEYS: dict[DeviceKind, tuple[frozenset[str], str]] = {
    "adb": (
        frozenset({"providers", "provider_options", "tensorrt", "openvino", "x86_amx"}),
        "benchmark_model runs TFLite models with a delegate",
    ),
    "npu-sim": (_RUNNER_KEYS, "it simulates each model once from the npu section"),
    "vela": (_RUNNER_KEYS, "Vela estimates each model once from the vela section"),
    # runtime stays: the one the publisher measured with.
    "published": (_RUNNER_KEYS, "its latencies come from the published tables"),
}
# The model files a simulator reads, as the runtime a profile may name for it.
_SIMULATOR_RUNTIMES: dict[DeviceKind, tuple[Runtime, str]] = {
    "npu-sim": ("onnxruntime", "simulates ONNX models"),
    "vela": ("tflite", "compiles int8 TFLite models"),
}
# Runner keys that trtexec does not use.
_NOT_FOR_TENSORRT = {
    "threads": "trtexec picks its own threads",
    "warmup": "trtexec warms up for tensorrt.warmup_ms milliseconds instead",
    "x86_amx": "trtexec runs the engine on the GPU",
}

_SECTIONS: dict[str, DeviceKind] = {
    "local": "local",
    "ssh": "ssh",
    "adb": "adb",
    "npu": "npu-sim",
    "vela": "vela",
    "published": "published",
}


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: DeviceKind
    description: str = ""
    runtime: Runtime = _DEFAULTS.runtime
    threads: int = Field(_DEFAULTS.threads, ge=1, le=MAX_THREADS)
    cores: list[int] | None = Field(None, min_length=1)
    # false: the runner refuses the runtime Intel AMX's tiles (x86-64 Linux); see RunSettings.
    x86_amx: bool = _DEFAULTS.x86_amx
    warmup: int = Field(_DEFAULTS.warmup, ge=0, le=MAX_RUNS)
    runs: int = Field(_DEFAULTS.runs, ge=1, le=MAX_RUNS)
    spread_threshold: float = Field(_DEFAULTS.spread_threshold, ge=0, allow_inf_nan=False)
    # runtime tflite: xnnpack (LiteRT's default), none (TFLite's builtin kernels only),
    # external:PATH (a delegate library on the device, with delegate_options); gpu and nnapi
    # are benchmark_model's (kind adb, which also takes xnnpack, none and external:PATH).
    delegate: str | None = Field(None, pattern=DELEGATE_PATTERN)
    delegate_options: dict[str, OptionValue] | None = None
    # runtime onnxruntime: execution providers in priority order, by name or alias, and
    # their options by the same names.
    providers: list[str] | None = Field(None, min_length=1)
    provider_options: dict[str, dict[str, OptionValue]] | None = None
    local: LocalSection | None = None
    ssh: SshSection | None = None
    adb: AdbSection | None = None
    tensorrt: TensorrtSection | None = None
    openvino: OpenvinoSection | None = None
    # The simulator's own keys (array size, dataflow, SRAM, bandwidth, clock): its factory
    # checks them.
    npu: dict[str, Any] | None = None
    vela: VelaSection | None = None
    published: PublishedSection | None = None

    @model_validator(mode="after")
    def _sections_match_kind(self) -> DeviceProfile:
        for section, kind in _SECTIONS.items():
            if getattr(self, section) is not None and kind != self.kind:
                raise ValueError(f"section '{section}' is for kind '{kind}', not '{self.kind}'")
        required = {
            "ssh": "ssh",
            "adb": "adb",
            "npu-sim": "npu",
            "vela": "vela",
            "published": "published",
        }.get(self.kind)
        if required and getattr(self, required) is None:
            raise ValueError(f"kind '{self.kind}' needs a '{required}' section")
        if self.cores is not None and any(c < 0 for c in self.cores):
            raise ValueError("cores: core numbers are >= 0")
        self._check_kind_keys()  # first: a key the kind does not use needs no mending
        if self.cores is not None and (twice := _listed_twice(self.cores)):
            raise ValueError(f"cores: core {twice[0]} is listed twice; list each core once")
        self._check_placement()
        self._check_tensorrt()
        self._check_openvino()
        self._check_simulator_runtime()
        return self

    def _given(self) -> list[str]:
        """The keys the profile gave a value (null counts as not given)."""
        return [key for key in self.model_fields_set if getattr(self, key) is not None]

    def _check_kind_keys(self) -> None:
        unused, why = _UNUSED_KEYS.get(self.kind, (frozenset(), ""))
        if refused := sorted(unused.intersection(self._given())):
            raise ValueError(f"{refused[0]}: kind '{self.kind}' does not use it ({why}); remove it")

    def _check_simulator_runtime(self) -> None:
        if self.kind in _SIMULATOR_RUNTIMES and "runtime" in self._given():
            runtime, reads = _SIMULATOR_RUNTIMES[self.kind]
            if self.runtime != runtime:
                raise ValueError(
                    f"runtime: kind '{self.kind}' {reads}, so runtime {self.runtime} does not "
                    f"apply; remove runtime (or give {runtime})"
                )

    def _check_tensorrt(self) -> None:
        if self.runtime == "tensorrt" and self.kind not in _RUNNER_KINDS:
            raise ValueError(
                f"runtime tensorrt runs trtexec through the on-device runner: kind ssh or "
                f"local, not '{self.kind}'"
            )
        if self.tensorrt is not None and self.runtime != "tensorrt":
            raise ValueError("section 'tensorrt' is for runtime tensorrt")
        if self.runtime == "tensorrt" and (
            refused := sorted(_NOT_FOR_TENSORRT.keys() & self._given())
        ):
            key = refused[0]
            raise ValueError(
                f"{key}: runtime tensorrt does not use it ({_NOT_FOR_TENSORRT[key]}); remove it"
            )

    def _check_openvino(self) -> None:
        if self.runtime == "openvino" and self.kind not in _RUNNER_KINDS:
            raise ValueError(
                f"runtime openvino runs through the on-device runner: kind ssh or local, not "
                f"'{self.kind}'"
            )
        if self.openvino is not None and self.runtime != "openvino":
            raise ValueError(
                "section 'openvino' is for runtime openvino (onnxruntime's OpenVINO execution "
                "provider is providers: [openvino])"
            )

    def _check_placement(self) -> None:
        if self.kind == "adb" and self.runtime != "tflite":
            raise ValueError("kind 'adb' runs benchmark_model: runtime tflite, with a delegate")
        if self.delegate is not None and self.runtime != "tflite":
            raise ValueError("delegate is for runtime tflite; onnxruntime takes providers")
        if self.delegate in ("gpu", "nnapi") and self.kind != "adb":
            raise ValueError(
                f"delegate {self.delegate} needs an adb device (benchmark_model); kind "
                f"'{self.kind}' runs the Python runner: xnnpack, none or external:PATH"
            )
        external = (self.delegate or "").startswith("external:")
        if external and not (self.delegate or "").startswith("external:/"):
            # The runner and benchmark_model run in a temporary folder on the device.
            raise ValueError(
                f"delegate {self.delegate}: give the library's absolute path on the device "
                "(external:/path/to/libdelegate.so); a relative one would be looked for in "
                "the measurement's temporary folder"
            )
        if self.delegate_options and not external:
            raise ValueError("delegate_options are for delegate external:PATH")
        if self.providers is not None and self.runtime != "onnxruntime":
            raise ValueError(
                "providers are for runtime onnxruntime; tflite takes a delegate, openvino a "
                "device in its openvino section"
            )
        names = [provider_name(p) for p in self.providers or []]
        listed = {"providers": self.providers, "provider_options": self.provider_options}
        for key, names_given in listed.items():
            if names_given and (why := _same_provider_twice(key, list(names_given))):
                raise ValueError(why)
        for given in self.provider_options or {}:
            if provider_name(given) == "CPUExecutionProvider":
                # onnxruntime creates its CPU provider from the session options alone and
                # ignores provider options given for it: they would be measured as not set.
                raise ValueError(
                    f"provider_options: {given}: onnxruntime's CPU provider takes no provider "
                    "options (it ignores them); remove them (its threads are the profile's "
                    "threads)"
                )
            if self.providers is None:  # the default, the CPU provider, takes no options here
                raise ValueError(
                    f"provider_options: {given} is given, but providers is not: list the "
                    f"providers the options are for (providers: [{given}])"
                )
            if provider_name(given) not in names:
                raise ValueError(f"provider_options: {given} is not in providers")

    @property
    def files_runtime(self) -> str:
        """The runtime that runs the device's model files, as its fingerprint names it:
        simulators and compilers are runtimes of their own kind; the runner's kinds and adb
        (benchmark_model, TFLite only) name theirs."""
        return self.runtime if self.kind in ("local", "ssh", "adb") else self.kind

    @property
    def classify_refusal(self) -> str | None:
        """Why its device does not classify images (``Device.classify_refusal``), or None
        where it does, known before it is opened."""
        if self.kind == "published":
            return "it is published latency tables: nothing runs there"
        if self.kind in _CLASSIFYING_KINDS:
            return classify_refusal(self.run_settings())
        return LATENCY_ONLY

    def run_settings(self) -> RunSettings:
        trt = self.tensorrt or TensorrtSection()
        ov = self.openvino or OpenvinoSection()
        return RunSettings(
            openvino_device=ov.device,
            openvino_properties=_options(ov.properties),
            trtexec=trt.trtexec,
            precision=trt.precision,
            warmup_ms=trt.warmup_ms,
            runtime=self.runtime,
            threads=self.threads,
            warmup=self.warmup,
            runs=self.runs,
            spread_threshold=self.spread_threshold,
            cores=tuple(self.cores) if self.cores is not None else None,
            x86_amx=self.x86_amx,
            delegate=self.delegate,
            delegate_options=_options(self.delegate_options),
            providers=(
                tuple(provider_name(p) for p in self.providers)
                if self.providers is not None
                else None
            ),
            provider_options=tuple(
                (provider_name(name), _options(options))
                for name, options in (self.provider_options or {}).items()
            ),
        )


def _options(options: dict[str, OptionValue] | None) -> tuple[tuple[str, str], ...]:
    """Options as text, which is how delegates and providers read them."""
    return tuple(
        (key, ("true" if value else "false") if isinstance(value, bool) else str(value))
        for key, value in (options or {}).items()
    )


def list_profiles() -> list[str]:
    """Names of the bundled profiles."""
    folder = resources.files("devices") / "profiles"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A bundled profile by name (``raspberry-pi-4``) or a profile file by path."""
    text, where = _read(name_or_path)
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise DeviceError(f"device profile {where} is not valid YAML{yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise DeviceError(f"device profile {where} must be a mapping (name, kind, ...)")
    return validate_profile(raw, where=where)


def validate_profile(raw: dict[str, Any], *, where: str = "(given)") -> DeviceProfile:
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        problem = f"{key}: {err['msg']}"
        if err["type"] == "extra_forbidden":
            problem = f"{key}: {unknown_key(DeviceProfile, err['loc'])}"
        if err["type"] == "value_error":  # our own checks: their words, not pydantic's prefix
            problem = f"{key}: {err['ctx']['error']}"
        if not err["loc"] and err["type"] == "value_error":
            problem = str(err["ctx"]["error"])  # the checks across keys name their keys
        raise DeviceError(f"device profile {where}: {problem}{more}") from None


def open_device(name_or_path: str | Path) -> Device:
    """The device a profile describes, built by the factory registered for its kind."""
    profile = load_profile(name_or_path)
    if profile.kind == "published":
        # Nothing to connect to: the tables are the device.
        raise DeviceError(
            f"device {profile.name!r} is published latency tables ({profile.description}): it "
            "runs no models; import its tables with 'edgenas profile "
            f"{profile.name} --space SPACE --tables DIR' and use it in search and reports"
        )
    # Only the keys given: a factory validates them again, and refuses keys its kind does not
    # use (the defaults of every key would look given).
    device = create_device(profile.kind, profile.name, profile.model_dump(exclude_unset=True))
    device.named_on_the_command_line(str(name_or_path))
    return device


def _read(name_or_path: str | Path) -> tuple[str, str]:
    text_name = str(name_or_path)
    looks_like_path = (
        isinstance(name_or_path, Path) or "/" in text_name or text_name.endswith((".yaml", ".yml"))
    )
    if looks_like_path:
        path = Path(name_or_path)
        try:
            return path.read_text(), str(path)
        except OSError as exc:
            raise DeviceError(f"cannot read device profile {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise DeviceError(
                f"device profile {path} is not a text file (not UTF-8): give a profile YAML"
            ) from None
    bundled = resources.files("devices") / "profiles" / f"{text_name}.yaml"
    if not bundled.is_file():
        raise DeviceError(
            f"unknown device profile {text_name!r}; bundled profiles: "
            f"{', '.join(list_profiles())}; or give the path of a YAML file"
        )
    return bundled.read_text(), f"{text_name!r}"
