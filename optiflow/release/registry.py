"""MLflow tracking and the model registry: one run per pipeline run, one version per registration,
the champion alias moved only when the new version passes every gate, and rollback to the previous champion."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from optiflow.assess.gates import GateReport
from optiflow.config import Config, Runtime, TrackingParams, redact_uri
from optiflow.errors import IntegrityError, OptiflowError, ServiceUnavailable
from optiflow.io import (
    exclusive_lock,
    file_digests,
    read_json,
    resolve_database_uri,
    sha256_file,
    sqlite_file,
    verify_digests,
)
from optiflow.modeling.candidates import META_FILE, uses_torch
from optiflow.release import pyfunc_model
from optiflow.release.pyfunc_model import CANDIDATE, MODEL_DATA, WHEELS, load_model_data, write_model_data
from optiflow.release.serving_spec import LABEL, PROBABILITY, SPEC_FILE, ServingSpec

T = TypeVar("T")

log = logging.getLogger(__name__)

MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy", "pydantic", "PyYAML", "pyarrow")
ARTIFACTS_TAG = "optiflow.artifacts.sha256"  # JSON {relative path: sha256} of every stored file
PROMOTION_TAG = "optiflow.promotion"  # promoted | rejected | rolled back | challenger | aborted: a version's standing
# PROMOTION_TAG of a version that passed every gate and waits in a release (optiflow.release.rollout)
STAGED = "challenger"
_EXPORTED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class PromotionDecision:
    """The promotion outcome of one registered version: every gate result, and which aliases moved."""

    promote: bool
    reason: str  # the gate report's one message: every failure, observed vs threshold
    gates: dict[str, Any]  # GateReport.to_dict()
    champion_version: str | None = None  # the champion it was compared with
    previous_version: str | None = None  # the version that got the `previous` alias (promotion only)
    staged: bool = False  # passed every gate and waits as the challenger of a release (release.mode / approval)

    @property
    def outcome(self) -> str:
        return "promoted" if self.promote else STAGED if self.staged else "rejected"


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    run_id: str
    alias: str
    decision: PromotionDecision
    tracking_uri: str
    run_report: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": {**asdict(self.decision), "outcome": self.decision.outcome}}


@dataclass(frozen=True)
class Rollback:
    restored: str  # the version that is champion again
    rolled_back: str | None  # the version that was champion (None when no champion was set)
    user: str
    reason: str
    at: str  # UTC ISO time


LOCK_FILE = ".optiflow-registry.lock"
REFERENCE_ARTIFACT = "reference"  # run artifact folder holding the monitoring reference sample of a version


@contextlib.contextmanager
def registry_lock(root: Path) -> Iterator[None]:
    """Serialise champion read-compare-set across processes, so two runs cannot both promote on a stale comparison."""
    with exclusive_lock(Path(root) / LOCK_FILE):
        yield


SOURCE_TREE = Path(__file__).resolve().parents[2]  # the checkout holding pyproject.toml and requirements.lock
LOCK = "requirements.lock"
PACKAGE_FILES = ("pyproject.toml", "README.md", "optiflow", "flows", "tasks", "tools")  # what the wheel is built from


def model_requirements(wheel: str, wheel_sha256: str, packages: tuple[str, ...] = MODEL_REQUIREMENTS) -> list[str]:
    """The model's pip requirements, every package hash-pinned: the optiflow wheel at ``wheel`` (a path relative to
    the model folder), then each of ``packages`` (what its loader imports) and everything those need, at the version
    and hash requirements.lock holds. The wheel is found through ``--find-links``, which pip resolves against the
    requirements file's folder wherever it runs (the Dockerfile MLflow generates runs it from /opt/mlflow); its hash
    admits only this build, never a package of the same name from an index. pip checks hashes for all lines or none,
    hence the whole closure; the installed versions must be the locked ones (a registration from a drifted
    environment fails here; a local build label such as torch's +cpu is the locked wheel)."""
    from packaging.utils import parse_wheel_filename
    from packaging.version import Version

    locked = locked_hashes(SOURCE_TREE / LOCK)
    folder, name = wheel.rsplit("/", 1)
    lines = [f"--find-links {folder}", f"optiflow=={parse_wheel_filename(name)[1]} --hash=sha256:{wheel_sha256}"]
    for name, installed in sorted(dependency_closure(packages).items()):
        pinned = locked.get(name)
        if pinned is None or pinned[0] != Version(installed).public:
            held = f"locks {pinned[0]}" if pinned else "does not list it"
            raise OptiflowError(f"{name} {installed} is installed but {LOCK} {held}; reinstall from {LOCK}")
        lines.append(f"{name}=={pinned[0]} " + " ".join(f"--hash={digest}" for digest in pinned[1]))
    return lines


def locked_hashes(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, ["sha256:..."])} of a pip-compile style lock file."""
    from packaging.utils import canonicalize_name

    entries = {}
    for line in lock.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)(.*)$", line.strip())
        if match:
            entries[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=(sha256:[0-9a-f]{64})", match[3]))
    return entries


def dependency_closure(roots: tuple[str, ...]) -> dict[str, str]:
    """{normalised name: installed version} of ``roots`` and everything they require here (markers evaluated for
    this interpreter, no extras)."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    pending = list(roots)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        dist = distribution(name)
        found[name] = dist.version
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def serving_dependencies(pyproject: str) -> str:
    """``pyproject`` with its ``dependencies = [...]`` replaced by the model's loader packages at their installed
    versions (the training stack, Prefect, DVC, torch, is not needed to load and serve the model)."""
    from importlib.metadata import version

    pins = "".join(f'    "{package}=={version(package)}",\n' for package in MODEL_REQUIREMENTS)
    replaced, count = re.subn(r"(?ms)^dependencies = \[\n.*?^\]\n", f"dependencies = [\n{pins}]\n", pyproject)
    if count != 1:
        raise OptiflowError("pyproject.toml: no `dependencies = [` ... `]` block to write the model's dependencies in")
    return replaced


_WHEELS_BUILT: dict[str, Path] = {}  # digest of the sources -> the wheel this process built from them


def build_wheel(target: Path) -> Path:
    """The optiflow package of this checkout as a wheel in ``target``, built offline (`pip wheel --no-deps
    --no-build-isolation`) from a copy of its sources, so the checkout gets no build/ folder and two registrations
    never share one. Its code is the checkout's; its declared dependencies are what the model's loader needs
    (``serving_dependencies``), so installing it with the model's hash-pinned requirements asks for nothing else.

    Building costs about 2 s of pip, so a process builds once per state of the sources (their digest) and each
    registration gets its own copy of that wheel."""
    if not (SOURCE_TREE / "pyproject.toml").is_file():
        raise OptiflowError(f"{SOURCE_TREE}: no pyproject.toml; registering needs optiflow's source to build its wheel")
    digest = _sources_digest()
    built = _WHEELS_BUILT.get(digest)
    if built is None or not built.is_file():
        built = _WHEELS_BUILT[digest] = _build_wheel(_process_folder())
    Path(target).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(built, Path(target) / built.name))


def _sources_digest() -> str:
    """sha256 over the path and bytes of every file the wheel is built from."""
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(SOURCE_TREE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _source_files() -> list[Path]:
    """The files of PACKAGE_FILES the wheel is built from (no compiled Python), in a fixed order."""
    files: list[Path] = []
    for name in PACKAGE_FILES:
        origin = SOURCE_TREE / name
        found = origin.rglob("*") if origin.is_dir() else [origin]
        files += sorted(p for p in found if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return files


def _process_folder() -> Path:
    """A temporary folder this process removes when it exits (a forked child leaves it to its parent)."""
    folder, owner = Path(tempfile.mkdtemp(prefix="optiflow-wheel-")), os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return folder


def _build_wheel(target: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="optiflow-wheel-") as staging:
        source = Path(staging) / "optiflow-source"
        for origin in _source_files():  # what the digest covers, so a reused wheel is built from the same files
            copy = source / origin.relative_to(SOURCE_TREE)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy)
        project = source / "pyproject.toml"
        project.write_text(serving_dependencies(project.read_text(encoding="utf-8")), encoding="utf-8")
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        done = subprocess.run([*command, "--wheel-dir", str(target), str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise OptiflowError(f"building the optiflow wheel failed: {done.stderr.strip()[-2000:]}")
    (wheel,) = Path(target).glob("optiflow-*.whl")
    return wheel


def tracking_uri(tracking: TrackingParams, root: Path) -> str:
    """MLFLOW_TRACKING_URI wins; a relative sqlite path in params resolves against the project root."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return resolve_database_uri(tracking.uri, root)


def store_exists(config: Config) -> bool:
    """False for a local store not created yet (nothing was ever registered); a server is taken to exist."""
    uri = tracking_uri(config.params.tracking, config.root)
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def require_store(config: Config) -> None:
    """Loading a champion needs a registry: a local store that does not exist yet holds none, so say so (and create
    nothing) instead of letting MLflow create an empty database."""
    uri = tracking_uri(config.params.tracking, config.root)
    if not store_exists(config):
        raise OptiflowError(
            f"no champion yet: nothing is registered in {uri.removeprefix('sqlite:///')}; run `make run` "
            "(or `optiflow train`) first"
        )


def connect(config: Config, *, create: bool = True, writing: bool = False) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns the URI for display, with
    any password hidden (it reaches registration.json, Prefect artifacts and the console). ``create=False`` (reading
    a champion) refuses a local store that does not exist yet rather than creating it; ``writing`` checks the store
    accepts writes (a read-only database fails here with one clear error, not halfway through a registration)."""
    import mlflow

    if not create:
        require_store(config)
    if not logging.getLogger("mlflow").isEnabledFor(logging.INFO):  # MLFLOW_LOGGING_LEVEL: its prints follow it
        import mlflow.pyfunc  # importing it switches MLflow's event prints back on: import it first
        from mlflow.utils.logging_utils import disable_logging

        disable_logging()
    uri = tracking_uri(config.params.tracking, config.root)
    # MLflow exports the URI into os.environ; undo that so the user's own MLFLOW_TRACKING_URI (or its absence)
    # stays the only override, and a later connect() to another project is not captured by this one.
    exported = {key: os.environ.get(key) for key in _EXPORTED_ENV}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    experiment = config.params.tracking.experiment
    try:
        if mlflow.get_experiment_by_name(experiment) is None:
            # A tracking server stores artifacts where it was told to (--artifacts-destination): clients send them
            # there, so its experiments must not point at a folder on the client's disk.
            remote = uri.startswith(("http://", "https://"))
            location = None if remote else (config.root / config.params.tracking.artifact_location).resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
        found = mlflow.set_experiment(experiment)
        if writing:  # MLflow logs the database error with its traceback before raising it: the error below says it
            store_log = logging.getLogger("mlflow.store.db.utils")
            level, store_log.level = store_log.level, logging.CRITICAL
            try:
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, "optiflow.store", "writable")
            finally:
                store_log.setLevel(level)
    except Exception as exc:  # SQLAlchemy, MLflow and OS errors alike: the store is down, locked or unwritable
        raise ServiceUnavailable(
            f"MLflow tracking store {redact_uri(uri)} is unavailable{' or read-only' if writing else ''} "
            f"({type(exc).__name__}: "
            f"{redact_uri(str(exc).splitlines()[0] if str(exc) else '')}); check tracking.uri (runtime.yaml or "
            "OPTIFLOW_TRACKING__URI) or MLFLOW_TRACKING_URI, and that the database is reachable and writable. "
            "Nothing was registered."
        ) from None
    return redact_uri(uri)


def champion_version(model_name: str, alias: str) -> str | None:
    """The version holding ``alias`` (works for any alias), or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def find_version(model_name: str, tag: str, value: str) -> Any:
    """The newest version of ``model_name`` whose ``tag`` equals ``value``, or None."""
    from mlflow import MlflowClient

    found = MlflowClient().search_model_versions(f"name = '{model_name}' and tags.`{tag}` = '{value}'")
    return max(found, key=lambda version: int(version.version)) if found else None


def score_version(model_name: str, model_version: str, score: Callable[[Any], T]) -> T:
    """Re-score a registered version on today's held-out data, so both models are judged on the same rows."""
    return score(load_registered(model_name, version=model_version).model)


def git_state(root: Path) -> dict[str, str]:
    """The commit and whether tracked inputs differ from it. dvc.lock is left out: `dvc repro` rewrites it with the
    hashes of this very run's outputs (timings in reports/compression.json change every run), so it is an output."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = "true" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock") else "false"
    return {"git.commit": commit, "git.dirty": dirty if commit != "unknown" else "unknown"}


def model_signature(spec: ServingSpec) -> Any:
    """What the model's ``predict`` accepts and returns, as MLflow records it. Every feature is declared ``Any``:
    the row contract inside ``predict`` types and checks each value (an int where training saw floats, numeric
    text, None), so MLflow must not refuse natural input first (``double`` refuses int64 columns)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    positive = spec.labels[0]
    label_type = "boolean" if isinstance(positive, bool) else "long" if isinstance(positive, int) else "string"
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), column) for column in spec.features]),
        outputs=Schema([ColSpec(label_type, LABEL), ColSpec("double", PROBABILITY)]),
    )


def log_model_version(
    candidate: Path,
    model: Any,
    *,
    model_name: str,
    input_example: pd.DataFrame,
    spec: ServingSpec,
    parity_rows: pd.DataFrame | None = None,
) -> str:
    """Register the candidate folder and the serving spec as the data of a pyfunc whose loader is
    ``optiflow.release.pyfunc_model`` in the installed package (no code and no pickled object is stored; ``predict``
    returns a label and the positive-class probability), and record every stored file's sha256 on the version.

    Given ``parity_rows`` (the validation split), the fitted ``model`` is also exported to ONNX and checked on them
    (optiflow.release.onnx); the graph and its parity figures are stored in the data folder and tagged on it."""
    import mlflow

    from optiflow.release.onnx import export_checked

    with tempfile.TemporaryDirectory(prefix="optiflow-register-") as staging:
        onnx = None if parity_rows is None else export_checked(model, spec, parity_rows)
        wheel = build_wheel(Path(staging) / "build")
        data = write_model_data(Path(staging) / MODEL_DATA, candidate, spec, onnx, wheel)
        # MLflow stores the data folder as data/<its name>; its installers run pip in the model folder
        packages = (*MODEL_REQUIREMENTS, "torch") if uses_torch(model) else MODEL_REQUIREMENTS
        requirements = model_requirements(f"data/{MODEL_DATA}/{WHEELS}/{wheel.name}", sha256_file(wheel), packages)
        info = mlflow.pyfunc.log_model(
            name=LOGGED_NAME,
            loader_module=pyfunc_model.__name__,
            data_path=str(data),
            signature=model_signature(spec),
            input_example=input_example[list(spec.features)],
            pip_requirements=requirements,
            model_config={"output": pyfunc_model.FRAME},  # MLflow lets a load override only the keys logged here
            registered_model_name=model_name,
        )
    model_version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory(prefix="optiflow-digest-") as target:
        stored = _download(model_name, model_version, Path(target))
        client.log_model_artifact(info.model_id, str(without_store_location(stored / MLMODEL)))
        client.log_model_artifact(info.model_id, str(without_build_dependencies(stored / PYTHON_ENV)))
        record = json.dumps(file_digests(stored), sort_keys=True)
    client.set_model_version_tag(model_name, model_version, ARTIFACTS_TAG, record)
    if onnx is not None:
        parity = onnx.parity
        verdict = "passed" if parity.passed else "failed"
        client.set_model_version_tag(model_name, model_version, "optiflow.onnx.parity", verdict)
        client.set_model_version_tag(model_name, model_version, "optiflow.onnx.check", parity.message)
    return model_version


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A registered version loaded after its files matched the registry's sha256 record."""

    name: str
    version: str
    alias: str | None
    model: Any  # predict_proba on raw feature frames
    meta: dict[str, Any]  # the candidate's meta.json
    spec: ServingSpec
    tags: dict[str, str]  # lineage: data hash, git commit, run report, ...
    run_id: str | None
    runtime: str = "python"  # what runs ``model``: "python" (the candidate) or "onnx" (ONNX Runtime)


def gates_warning(loaded: LoadedModel) -> str | None:
    """None for a version promoted past every gate; else why serving it is a risk: an alias was moved onto it by
    hand (a rejected or rolled-back version, or one whose registration never reached a decision)."""
    outcome = loaded.tags.get(PROMOTION_TAG)
    if outcome in ("promoted", STAGED):
        return None
    return (
        f"{loaded.name} v{loaded.version} did not pass its promotion gates ({PROMOTION_TAG} = {outcome or 'missing'}); "
        f"it is served only because the alias {loaded.alias or '(by version)'} was set by hand"
    )


class StoreWatch:
    """Notices a SQLite tracking store replaced on disk (restored from a backup, say). MLflow keeps pooled
    connections to the file it first opened, so a long-running server would go on reading the deleted file and stop
    following the registry; ``check`` drops those connections when the file changes."""

    def __init__(self, config: Config) -> None:
        database = sqlite_file(tracking_uri(config.params.tracking, config.root))
        self.path = Path(database) if database is not None else None
        self.seen = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino) if stat is not None else None

    def check(self) -> bool:
        """True (and MLflow's connections to the file dropped) when the file is not the one seen before."""
        now = self._identity()
        if self.path is None or now == self.seen:
            return False
        self.seen = now
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

        for store in (TrackingStore, RegistryStore):  # MLflow's per-URI engine cache (no public way to reset it)
            for uri, engine in list(store._engine_map.items()):
                if sqlite_file(uri) is not None and Path(sqlite_file(uri)).resolve() == self.path.resolve():
                    engine.dispose()
        log.warning("the tracking store %s was replaced on disk; reconnected to the new file", self.path)
        return True


def resolve_version(model_name: str, *, alias: str | None = None, version: str | None = None) -> Any:
    """The MLflow ModelVersion behind an alias or a version number; a clear error when neither exists."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if (alias is None) == (version is None):
        raise OptiflowError("give exactly one of an alias or a version")
    try:
        if alias is not None:
            return MlflowClient().get_model_version_by_alias(model_name, alias)
        return MlflowClient().get_model_version(model_name, str(version))
    except MlflowException as exc:
        wanted = f"alias {alias!r}" if alias is not None else f"version {version}"
        hint = "; no champion yet: run `make run` (or `optiflow train`) first" if alias is not None else ""
        raise OptiflowError(f"registered model {model_name!r} has no {wanted}: {exc.message}{hint}") from None


def export_verified(model_name: str, target: Path, *, alias: str | None = None, version: str | None = None) -> str:
    """Copy a version's files into ``target`` (a new folder) after checking every one, MLmodel included, against
    the registry's record: what `mlflow models serve -m <target>` may then serve (serving ``models:/`` directly would
    run whatever loader the stored MLmodel names). Returns the version."""
    import shutil

    found = resolve_version(model_name, alias=alias, version=version)
    model_version, record = str(found.version), found.tags.get(ARTIFACTS_TAG)
    if record is None:
        raise IntegrityError(f"{model_name} v{model_version}: no {ARTIFACTS_TAG} tag, so its files cannot be verified")
    if Path(target).exists():
        raise OptiflowError(f"{target}: already exists; export into a new folder")
    with tempfile.TemporaryDirectory(prefix="optiflow-export-") as staging:
        stored = _download(model_name, model_version, Path(staging))
        verify_digests(stored, json.loads(record), f"{model_name} v{model_version}")
        shutil.copytree(stored, target)
    return model_version


def load_registered(
    model_name: str, *, alias: str | None = None, version: str | None = None, runtime: Runtime = "python"
) -> LoadedModel:
    """Download a version's files and check every one (MLmodel and the model's digest file included) against the
    sha256 recorded on the version at registration BEFORE anything is loaded; then load it with Optiflow's own
    loader, never the loader the MLmodel file names: its parity-checked ONNX graph when ``runtime`` allows
    (optiflow.release.onnx.load_onnx; the Python model is then never loaded), else the candidate (checked against
    the model's digest file, and its model files against the allowlist)."""
    from optiflow.release.onnx import ONNX_ARTIFACT, load_onnx

    found = resolve_version(model_name, alias=alias, version=version)
    model_version = str(found.version)
    record = found.tags.get(ARTIFACTS_TAG)
    if record is None:
        raise IntegrityError(
            f"{model_name} v{model_version}: no {ARTIFACTS_TAG} tag, so its files cannot be verified; "
            "register it again with this version of Optiflow"
        )
    with tempfile.TemporaryDirectory(prefix="optiflow-load-") as target:
        stored = _download(model_name, model_version, Path(target))
        what = f"{model_name} v{model_version}"
        verify_digests(stored, json.loads(record), what)
        data = stored / "data" / MODEL_DATA
        if not data.is_dir():
            raise IntegrityError(
                f"{what}: no data/{MODEL_DATA} folder (registered by an older Optiflow as a models-from-code pyfunc); "
                "register it again with this version of Optiflow"
            )
        spec = ServingSpec.load(data / SPEC_FILE)
        served, note = load_onnx(data / ONNX_ARTIFACT, spec, runtime, what)
        if served is None:
            loaded = load_model_data(data)
            model, meta = loaded.model, loaded.meta
        else:
            model, meta = served, read_json(data / CANDIDATE / META_FILE)
    log.info("loaded %s (%s), every file verified; %s", what, alias or "by version", note)
    used = "python" if served is None else "onnx"
    return LoadedModel(model_name, model_version, alias, model, meta, spec, dict(found.tags), found.run_id, used)


MLMODEL = "MLmodel"
PYTHON_ENV = "python_env.yaml"
LOGGED_NAME = "model"  # the name the version is logged under in its run


def without_store_location(mlmodel: Path) -> Path:
    """MLflow 3 writes the artifact store's location into MLmodel's artifact_path: for a local store, an absolute
    path of the training checkout. It is rewritten (in place; returned) to the model's name in its run, as MLflow 2
    recorded it; loading never reads it."""
    from mlflow.models import Model

    model = Model.load(str(mlmodel))
    model.artifact_path = LOGGED_NAME
    model.save(str(mlmodel))
    return mlmodel


def without_build_dependencies(python_env: Path) -> Path:
    """MLflow lists this interpreter's pip, setuptools and wheel as the model's unhashed build dependencies, and the
    Dockerfile it generates installs them in one pip call with the hash-pinned requirements, which pip then refuses.
    Every requirement is a wheel, so nothing needs building: the list is emptied (in place; returned)."""
    import yaml

    environment = yaml.safe_load(python_env.read_text(encoding="utf-8"))
    environment["build_dependencies"] = []
    python_env.write_text(yaml.safe_dump(environment, sort_keys=False), encoding="utf-8")
    return python_env


def _download(model_name: str, model_version: str, target: Path) -> Path:
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{model_version}", dst_path=str(target))
    )


DESCRIPTION_LIMIT = 5000  # MLflow's model-version description column; PostgreSQL enforces it, SQLite does not
CARD_ARTIFACT = "model_card.html"


def version_description(card: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The model card as the version's description. A card over ``limit`` characters keeps its last section (the gate
    decisions) and as many whole lines before it as fit, with a pointer to the full card logged with the run."""
    if len(card) <= limit:
        return card
    note = f"\n\n… cut here to fit the registry; the full card is `{CARD_ARTIFACT}` in this version's run artifacts.\n"
    last_section = card.rfind("\n## ")
    tail = card[last_section:] if last_section > 0 and len(card) - last_section < limit // 2 else ""
    head = card[: limit - len(note) - len(tail)]
    return head[: head.rfind("\n")] + note + tail


def apply_decision(
    model_name: str,
    model_version: str,
    alias: str,
    previous_alias: str,
    report: GateReport,
    champion: str | None,
    hold: bool = False,
) -> PromotionDecision:
    """Tag the outcome on the version; only a version passing every gate takes ``alias``, the old champion
    ``previous``. With ``hold`` (a release policy), a passing version that would replace a champion is staged instead
    (the caller starts its release). Call it under ``registry_lock`` with ``champion`` read under the same lock."""
    from mlflow import MlflowClient

    client = MlflowClient()
    staged = report.passed and hold and champion is not None
    promote = report.passed and not staged
    outcome = "promoted" if promote else STAGED if staged else "rejected"
    client.set_model_version_tag(model_name, model_version, PROMOTION_TAG, outcome)
    client.set_model_version_tag(model_name, model_version, "optiflow.gates", report.message())
    previous = None
    if promote:
        if champion is not None and champion != model_version:
            client.set_registered_model_alias(model_name, previous_alias, champion)
            previous = champion
        client.set_registered_model_alias(model_name, alias, model_version)
    log.info("%s v%s %s: %s", model_name, model_version, outcome, report.message())
    return PromotionDecision(promote, report.message(), report.to_dict(), champion, previous, staged)


def rollback(model_name: str, alias: str, previous_alias: str, user: str, reason: str, at: str) -> Rollback:
    """Give ``alias`` back to the version holding ``previous_alias`` and remove ``previous_alias``.

    ``previous`` is removed rather than pointed at the rolled-back version: that version was rolled back for a
    reason and must not be one command away from returning. Who, why and when are tags on both versions.
    """
    from mlflow import MlflowClient

    restored = champion_version(model_name, previous_alias)
    if restored is None:
        raise OptiflowError(
            f"{model_name}: no version holds the alias {previous_alias!r}, so there is nothing to roll back to "
            f"(it is set when a promotion replaces a champion, and removed by a rollback)"
        )
    rolled_back = champion_version(model_name, alias)
    client = MlflowClient()
    client.set_registered_model_alias(model_name, alias, restored)
    client.delete_registered_model_alias(model_name, previous_alias)
    record = {"by": user, "reason": reason, "at": at}
    for key, value in {**record, "from_version": rolled_back or "none"}.items():
        client.set_model_version_tag(model_name, restored, f"optiflow.rollback.restored_{key}", value)
    if rolled_back is not None:
        for key, value in {**record, "to_version": restored}.items():
            client.set_model_version_tag(model_name, rolled_back, f"optiflow.rollback.removed_{key}", value)
        client.set_model_version_tag(model_name, rolled_back, PROMOTION_TAG, "rolled back")
    log.info("%s: %s moved from v%s back to v%s by %s (%s)", model_name, alias, rolled_back, restored, user, reason)
    return Rollback(restored, rolled_back, user, reason, at)
