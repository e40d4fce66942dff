"""A PyTorch multilayer perceptron as an sklearn classifier, so it sits after the same preprocessing as every family.

The network is a plain ``nn.Sequential`` of Linear / ReLU / Dropout layers described by a small JSON-able
``NetworkSpec``: compression rebuilds it with other widths or int8 layers, and saving stores the spec as JSON plus
the state dict, reloaded with ``torch.load(..., weights_only=True)`` (no pickled modules). torch is imported inside
functions, so listing the families (or scoring with an sklearn one) never pays for it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from optiflow.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
NETWORK_FORMAT = 1


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild the network's skeleton; the weights come from the state dict."""

    n_features: int
    hidden_sizes: tuple[int, ...]
    dropout: float = 0.0
    quantization: Literal["dynamic_int8", "onnx_int8"] | None = None  # torch's int8 layers, or ONNX Runtime's

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden_sizes": list(self.hidden_sizes)}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> NetworkSpec:
        return cls(**{**payload, "hidden_sizes": tuple(payload["hidden_sizes"])})


@dataclass(frozen=True)
class FitSettings:
    """How a network is trained: the MLP's own fit, pruning fine-tunes and distillation share this loop."""

    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    validation_fraction: float


def build_network(spec: NetworkSpec) -> nn.Module:
    """Linear -> ReLU -> Dropout per hidden layer, then one logit; int8 layers when the spec says so. An ONNX network
    is an empty shell here: its bytes come with the state dict."""
    from torch import nn

    if spec.quantization == "onnx_int8":
        from optiflow.modeling.onnx_network import OnnxNetwork

        return OnnxNetwork()

    layers: list[nn.Module] = []
    width = spec.n_features
    for hidden in spec.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(spec.dropout)]
        width = hidden
    layers.append(nn.Linear(width, 1))
    network = nn.Sequential(*layers).eval()
    if spec.quantization == "dynamic_int8":
        network = quantize_int8(network)
    return network


def quantize_int8(network: nn.Module) -> nn.Module:
    """Post-training dynamic int8 quantization of every Linear layer (weights int8, activations quantized per batch).

    The one place that names the quantization API. torch 2.13's ``torch.ao.quantization.quantize_dynamic`` works but
    warns it is deprecated in favour of torchao, whose ``quantize_`` measured slower than fp32 here without
    torch.compile (APIS.md); swap the body when torchao's eager path is faster. The input is left untouched.
    """
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(network).eval(), {nn.Linear}, dtype=torch.qint8)


def linear_layers(network: nn.Module) -> list[nn.Module]:
    """The network's float Linear layers in order (the ones pruning and distillation change); none for a network
    that is not a torch Sequential (an ONNX one)."""
    from torch import nn

    if not isinstance(network, nn.Sequential):
        return []
    return [module for module in network if isinstance(module, nn.Linear)]


def resolve_device(device: Device, setting: str = "train.device", *, strict: bool = True) -> str:
    """`auto` uses CUDA when torch sees a GPU and the CPU otherwise. `cuda` without a GPU is an error when ``strict``
    (training: results would silently come from another device), else logged and served on the CPU (scoring)."""
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        if strict:
            raise ConfigError(f"{setting} is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
        log.warning("%s is 'cuda' but no CUDA device is available: using the CPU", setting)
    chosen = "cuda" if available and device in ("cuda", "auto") else "cpu"
    _announce(chosen, setting, device, available)
    return chosen


@functools.cache
def _announce(chosen: str, setting: str, device: str, available: bool) -> None:
    """Logged once per process and choice, not once per fit (tuning fits hundreds of times)."""
    log.info("torch runs on %s (%s=%s, CUDA available: %s)", chosen, setting, device, available)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and switch on deterministic kernels for the block, restoring the process-wide flag after."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def weighted_bce(pos_weight: float | None) -> Loss:
    """Binary cross-entropy on logits; `pos_weight` scales the positive class's term (class weighting)."""
    import torch

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None if pos_weight is None else torch.tensor([pos_weight], device=logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[:, :1], pos_weight=weight)

    return loss


def fit_network(
    network: nn.Module,
    X: np.ndarray,
    targets: np.ndarray,
    stratify: np.ndarray,
    settings: FitSettings,
    loss: Loss,
    seed: int,
    device: str = "cpu",
) -> int:
    """Mini-batch AdamW with early stopping on a stratified held-out part of the rows; keeps the best weights.

    `targets` is (rows, k) float: column 0 the label (or soft label), further columns whatever `loss` reads.
    Returns the number of epochs the kept weights were trained for.
    """
    import torch
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(X))
    held_out = np.array([], dtype=int)
    if settings.validation_fraction > 0 and min(np.bincount(stratify.astype(int))) >= 2:
        rows, held_out = train_test_split(
            rows, test_size=settings.validation_fraction, stratify=stratify, random_state=seed
        )
    with deterministic(seed):
        network.to(device)
        features = torch.as_tensor(X, dtype=torch.float32, device=device)
        goal = torch.as_tensor(targets, dtype=torch.float32, device=device)
        fit_index = torch.as_tensor(rows, device=device)
        check_index = torch.as_tensor(held_out, device=device)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        shuffler = torch.Generator().manual_seed(seed)
        best_loss, best_state, best_epoch, waited = math.inf, None, 0, 0
        for epoch in range(1, settings.max_epochs + 1):
            network.train()
            order = fit_index[torch.randperm(len(fit_index), generator=shuffler).to(device)]
            for start in range(0, len(order), settings.batch_size):
                batch = order[start : start + settings.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss(network(features[batch]), goal[batch]).backward()
                optimizer.step()
            if len(check_index) == 0:
                best_epoch = epoch
                continue
            network.eval()
            with torch.no_grad():
                current = float(loss(network(features[check_index]), goal[check_index]))
            if current < best_loss - 1e-6:
                best_loss, best_epoch, waited = current, epoch, 0
                best_state = copy.deepcopy(network.state_dict())
            else:
                waited += 1
                if waited >= settings.patience:
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
    network.to("cpu").eval()
    return best_epoch


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """Binary MLP classifier (fit / predict_proba) trained with class weighting, early stopping and fixed seeds.

    The fitted network always ends on the CPU (where it is scored, saved and compressed) whatever device trained it.
    """

    _parameter_constraints: ClassVar[dict] = {
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "hidden_layers": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0.0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0.0, 0.5, closed="left")],
        "class_weight": [StrOptions({"balanced"}), None],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        hidden_units: int = 64,
        hidden_layers: int = 2,
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 8,
        validation_fraction: float = 0.15,
        class_weight: str | None = None,
        device: Device = "auto",
        random_state: int | None = None,
    ) -> None:
        self.hidden_units = hidden_units
        self.hidden_layers = hidden_layers
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.device = device
        self.random_state = random_state

    def fit_settings(self, max_epochs: int | None = None) -> FitSettings:
        return FitSettings(
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=max_epochs or self.max_epochs,
            patience=self.patience,
            validation_fraction=self.validation_fraction,
        )

    @property
    def seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    def fit(self, X: Any, y: Any) -> TorchMLPClassifier:
        self._validate_params()
        matrix = check_array(X, dtype=np.float32)
        classes, encoded = np.unique(np.asarray(y), return_inverse=True)
        if len(classes) != 2:
            raise ValueError(f"TorchMLPClassifier is binary: expected 2 classes, got {len(classes)} ({classes[:5]})")
        positives = int(encoded.sum())
        pos_weight = (len(encoded) - positives) / max(positives, 1) if self.class_weight == "balanced" else None
        spec = NetworkSpec(matrix.shape[1], (self.hidden_units,) * self.hidden_layers, self.dropout)
        with deterministic(self.seed):
            network = build_network(spec)
        self.epochs_ = fit_network(
            network,
            matrix,
            encoded.astype(np.float32)[:, None],
            encoded,
            self.fit_settings(),
            weighted_bce(pos_weight),
            self.seed,
            resolve_device(self.device),
        )
        self.classes_, self.spec_, self.network_, self.n_features_in_ = classes, spec, network, matrix.shape[1]
        return self

    def with_network(self, network: nn.Module, spec: NetworkSpec) -> TorchMLPClassifier:
        """A fitted copy of this classifier around another network (a compressed variant or a student)."""
        check_is_fitted(self, "network_")
        other = TorchMLPClassifier(**self.get_params())
        other.classes_, other.spec_, other.network_ = self.classes_, spec, network.eval()
        other.n_features_in_, other.epochs_ = spec.n_features, getattr(self, "epochs_", 0)
        return other

    def decision_logits(self, X: Any) -> np.ndarray:
        import torch

        check_is_fitted(self, "network_")
        matrix = _float32_matrix(X)
        with torch.inference_mode():
            return self.network_(torch.from_numpy(matrix))[:, 0].double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        positive = 1.0 / (1.0 + np.exp(-self.decision_logits(X)))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # skops (and so MLflow's sklearn flavour) stores an object through __getstate__: the network goes in as the
    # bytes of its state dict and comes back through torch.load(weights_only=True), never as a pickled module.
    def __getstate__(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("network_", "spec_", "classes_")}
        if hasattr(self, "network_"):
            state["network_json_"] = _network_json(self)
            state["network_state_"] = np.frombuffer(state_dict_bytes(self.network_), dtype=np.uint8).copy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        network_json, network_state = state.pop("network_json_", None), state.pop("network_state_", None)
        self.__dict__.update(state)
        if network_json is not None:
            stored = io.BytesIO(np.asarray(network_state).tobytes())
            _restore_network(self, json.loads(network_json), lambda spec: _torch_state(stored))


def _float32_matrix(X: Any) -> np.ndarray:
    """X as a float32 matrix of finite values. A non-empty float32 matrix of finite sum (what the preprocessing hands
    over) is taken as is: sklearn's check_array spent more than half of its 77 us on 4,096 x 46 rows looking for
    dataframe libraries, a seventh of the int8 network's whole 0.55 ms call. Anything else goes through check_array."""
    if isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2 and len(X) and np.isfinite(X.sum()):
        return X
    return check_array(X, dtype=np.float32)


NETWORK_STATE_FILE = "network.pt"
NETWORK_ONNX_FILE = "network.onnx"
NETWORK_CONFIG_FILE = "network.json"


def network_file(spec: NetworkSpec) -> str:
    """A network ONNX Runtime runs is saved as the .onnx file ONNX tools open (no torch container around its bytes:
    2 KB of a 13 KB int8 file at width 64); a torch network as its state dict."""
    return NETWORK_ONNX_FILE if spec.quantization == "onnx_int8" else NETWORK_STATE_FILE


def save_network(model: TorchMLPClassifier, folder: Path) -> list[str]:
    """network.json (spec, classes, hyperparameters) and the network (``network_file``); returns the file names."""
    from optiflow.io import write_bytes, write_text

    check_is_fitted(model, "network_")
    stored = network_file(model.spec_)
    network = model.network_
    write_text(folder / NETWORK_CONFIG_FILE, _network_json(model))
    write_bytes(folder / stored, network.model_bytes() if stored == NETWORK_ONNX_FILE else state_dict_bytes(network))
    return [NETWORK_CONFIG_FILE, stored]


def state_dict_bytes(network: nn.Module) -> bytes:
    """torch.save of the state dict into memory: saved to a path, torch names the archive's root folder after the
    file, and atomic writes go through a randomly named temporary file, so the bytes would change every save."""
    import torch

    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.getvalue()


def load_network(folder: Path) -> TorchMLPClassifier:
    """Rebuild the classifier from network.json and its network file: network.pt loaded with weights_only=True (no
    arbitrary objects), or network.onnx's bytes."""
    from optiflow.io import read_json

    def stored_state(spec: NetworkSpec) -> dict[str, Any]:
        path = folder / network_file(spec)
        if path.name == NETWORK_ONNX_FILE:
            from optiflow.modeling.onnx_network import OnnxNetwork

            return OnnxNetwork(path.read_bytes()).state_dict()
        with open(path, "rb") as state:
            return _torch_state(state)

    model = TorchMLPClassifier()
    _restore_network(model, read_json(folder / NETWORK_CONFIG_FILE), stored_state, origin=folder)
    return model


def _network_json(model: TorchMLPClassifier) -> str:
    payload = {
        "format": NETWORK_FORMAT,
        "spec": model.spec_.to_dict(),
        "classes": np.asarray(model.classes_).tolist(),
        "hyperparameters": model.get_params(),
        "epochs": int(getattr(model, "epochs_", 0)),
    }
    return json.dumps(payload, indent=1, sort_keys=True)


def _torch_state(stream: Any) -> dict[str, Any]:
    import torch

    with warnings.catch_warnings():  # torch's own int8 tensor rebuild touches the deprecated TypedStorage
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        return torch.load(stream, weights_only=True, map_location="cpu")


def _restore_network(
    model: TorchMLPClassifier,
    payload: dict[str, Any],
    stored_state: Callable[[NetworkSpec], dict[str, Any]],
    origin: Any = "model",
) -> None:
    if payload.get("format") != NETWORK_FORMAT:
        raise IntegrityError(f"{origin}: network format {payload.get('format')!r}, expected {NETWORK_FORMAT}")
    spec = NetworkSpec.from_dict(payload["spec"])
    network = build_network(spec)
    network.load_state_dict(stored_state(spec))
    model.set_params(**payload["hyperparameters"])
    model.classes_, model.spec_, model.network_ = np.asarray(payload["classes"]), spec, network.eval()
    model.n_features_in_, model.epochs_ = spec.n_features, payload.get("epochs", 0)
