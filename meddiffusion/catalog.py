"""The model catalogue: which trained models exist, how to build them, and their weights.

Two sources are merged into one list:

* shipped models, described in ``meddiffusion/models/catalog.json`` with their weights files
  beside it, and
* user models (fine-tuned locally), one model card ``<id>.json`` plus ``<id>.safetensors``
  each in the user model folder (``~/.meddiffusion/models``, or ``$MEDDIFF_MODEL_DIR``).

Weights are safetensors only and every load checks the file's sha256 against the card, so a
model file can neither run code (pickle) nor silently differ from what was measured.
``torch.load`` is never called.

Reading cards needs no torch (Slicer lists models without it); torch and safetensors load only
with weights. Which model a task uses by default is the cards' decision: ``default_for`` maps a
device type to a rank (1 first), e.g. ``{"cpu": 1, "cuda": 2}`` (see :func:`default_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from meddiffusion.files import atomic_write

if TYPE_CHECKING:
    import torch

__all__ = ["ModelEntry", "WeightsError", "SCHEMA_VERSION", "SHIPPED_DIR", "ENV_MODEL_DIR",
           "user_model_dir", "shipped_models", "user_models", "broken_models", "list_models", "get_model",
           "default_model",
           "load_task_model",
           "register_user_model", "load_state_dict", "load_weights", "check_safetensors", "save_model",
           "sha256_file"]

#: version of the catalogue / model card layout; bumped when a field changes meaning
SCHEMA_VERSION = 1
SHIPPED_DIR = Path(__file__).parent / "models"
ENV_MODEL_DIR = "MEDDIFF_MODEL_DIR"

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
_CONVERT_HINT = ("Only safetensors weights are accepted, because pickled files can run arbitrary "
                 "code when loaded. Convert it once, in an environment you trust:\n"
                 "    import torch, safetensors.torch\n"
                 "    state = torch.load('model.pt', map_location='cpu', weights_only=True)\n"
                 "    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, "
                 "'model.safetensors')")


class WeightsError(ValueError):
    """A weights file is missing, pickled, not safetensors, or fails its checksum."""


@dataclass
class ModelEntry:
    """One model card.

    ``architecture`` is ``{"network": <class name in meddiffusion.nets>, "kwargs": {...}}``;
    ``normalization`` says how inputs are scaled before the network (e.g.
    ``{"kind": "hu_window", "low": -1000, "high": 1000}``); ``weights`` is a file name
    relative to the catalogue folder the card came from.
    """

    id: str
    task: str
    version: str
    architecture: dict[str, Any]
    weights: str = ""
    sha256: str = ""
    normalization: dict[str, Any] = field(default_factory=dict)
    training_data: str = ""
    training_command: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    description: str = ""
    #: device type ("cpu", "cuda", "mps") -> rank among the task's defaults on it (1 first)
    default_for: dict[str, int] = field(default_factory=dict)
    #: where a fine-tuned model came from: parent id and sha256, data manifest hash, split, seed,
    #: configuration, package versions, and the gate's comparison with the parent
    provenance: dict[str, Any] = field(default_factory=dict)
    # where the card was found; not part of the card itself
    folder: Path | None = field(default=None, compare=False, repr=False)
    user: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_PATTERN.match(self.id):
            raise ValueError(f"model id {self.id!r} is not valid; expected letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit (it becomes a file name)")
        for name in ("task", "version"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"model '{self.id}': '{name}' must be a non-empty string")
        arch = self.architecture
        if (not isinstance(arch, dict) or not isinstance(arch.get("network"), str)
                or not isinstance(arch.get("kwargs", {}), dict)):
            raise ValueError(f"model '{self.id}': 'architecture' must be "
                             "{'network': <class name>, 'kwargs': {...}}, got " + repr(arch))
        if not isinstance(self.default_for, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for k, v in self.default_for.items()):
            raise ValueError(f"model '{self.id}': 'default_for' must map device types to ranks >= 1, "
                             f"e.g. {{'cpu': 1}}, got {self.default_for!r}")
        for name in ("normalization", "metrics", "provenance"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"model '{self.id}': '{name}' must be a JSON object (dict), "
                                 f"got {type(getattr(self, name)).__name__}")
        if self.weights and Path(self.weights).name != self.weights:
            raise ValueError(f"model '{self.id}': 'weights' must be a bare file name, got {self.weights!r}")

    @property
    def weights_path(self) -> Path:
        """Absolute path of the weights file."""
        if self.folder is None or not self.weights:
            raise WeightsError(f"model '{self.id}' has no weights file recorded in its card")
        return Path(self.folder) / self.weights

    def state_dict(self, device: "str | torch.device" = "cpu") -> "dict[str, torch.Tensor]":
        """The model's tensors, checked against the card's sha256 (see :func:`load_state_dict`)."""
        return load_state_dict(self, device)

    def to_dict(self) -> dict[str, Any]:
        """The JSON model card (without where it was found)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("folder", "user")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, folder: Path | None = None,
                  user: bool = False) -> "ModelEntry":
        card_fields = {f.name for f in fields(cls)} - {"folder", "user"}
        unknown = sorted(set(data) - card_fields - {"schema_version"})
        if unknown:
            raise ValueError(f"model card {data.get('id', '?')!r} has unknown field(s) {unknown}; "
                             f"expected a subset of {sorted(card_fields)}")
        missing = sorted({"id", "task", "version", "architecture"} - set(data))
        if missing:
            raise ValueError(f"model card {data.get('id', '?')!r} lacks required field(s) {missing}")
        return cls(**{k: v for k, v in data.items() if k != "schema_version"}, folder=folder, user=user)


# -- catalogue sources -------------------------------------------------------------------

def user_model_dir() -> Path:
    """The folder for locally registered models: ``$MEDDIFF_MODEL_DIR`` or ``~/.meddiffusion/models``."""
    value = os.environ.get(ENV_MODEL_DIR)
    return Path(value).expanduser() if value else Path.home() / ".meddiffusion" / "models"


def shipped_models() -> list[ModelEntry]:
    """Models listed in the catalogue shipped with the package."""
    path = SHIPPED_DIR / "catalog.json"
    data = _read_json(path)
    _check_schema(data, path)
    if not isinstance(data.get("models"), list):
        raise ValueError(f"{path}: expected a 'models' list")
    return [ModelEntry.from_dict(item, folder=SHIPPED_DIR) for item in data["models"]]


def user_models() -> list[ModelEntry]:
    """Models registered in the user model folder (one ``<id>.json`` card each); broken cards are skipped."""
    return _scan_user_folder()[0]


def broken_models() -> list[dict[str, str]]:
    """User model cards that cannot be used, each ``{"card": path, "reason": ...}`` (``meddiff info`` shows them)."""
    return _scan_user_folder()[1]


def _scan_user_folder() -> tuple[list[ModelEntry], list[dict[str, str]]]:
    """Every card of the user folder, sorted into usable entries and broken ones with the reason.

    A malformed card, a card whose id reuses a shipped model's or whose weights are a pickle
    never hides the other models: it is reported, not raised.
    """
    folder = user_model_dir()
    if not folder.is_dir():
        return [], []
    shipped_ids = {m.id for m in shipped_models()}
    entries, broken = [], []
    for card in sorted(folder.glob("*.json")):
        try:
            data = _read_json(card)
            _check_schema(data, card)
            entry = ModelEntry.from_dict(data, folder=folder, user=True)
            if entry.id != card.stem:
                raise ValueError(f"model card {card} holds id '{entry.id}'; the file must be named {entry.id}.json")
            if entry.id in shipped_ids:
                raise ValueError(f"user model card {card} reuses the id '{entry.id}' of a shipped model; rename or "
                                 "remove it")
            if entry.weights and Path(entry.weights).suffix.lower() in _PICKLE_SUFFIXES:
                raise WeightsError(f"model card {card} points at pickled weights '{entry.weights}', which are "
                                   "refused; convert them to safetensors")
        except (OSError, ValueError) as error:
            broken.append({"card": str(card), "reason": str(error)})
            continue
        entries.append(entry)
    return entries, broken


def list_models(task: str | None = None) -> list[ModelEntry]:
    """Shipped and usable user models, optionally only those for ``task`` (see :func:`broken_models`).

    A user card whose id equals a shipped one is broken rather than an override, so a model id
    always means the same weights.
    """
    models = shipped_models() + user_models()
    return [m for m in models if task is None or m.task == task]


def get_model(model_id: str) -> ModelEntry:
    """The model with id ``model_id``; a ValueError lists the known ids otherwise."""
    models = list_models()
    for entry in models:
        if entry.id == model_id:
            return entry
    known = ", ".join(m.id for m in models) or "none installed"
    raise ValueError(f"unknown model '{model_id}'; known models: {known}")


def default_model(task: str, device_type: str = "cpu") -> ModelEntry:
    """The model the cards name first for ``task`` on ``device_type`` (lowest ``default_for`` rank).

    A device type no card ranks falls back to the CPU ranking, then to the first model of the
    task, so a user who trained the only model of a task can run it without ``--model``.
    """
    models = list_models(task)
    if not models:
        raise ValueError(f"no model is installed for task '{task}'; train one with 'meddiff train {task} "
                         f"--out DIR --register ID' or pass --model")
    for kind in (device_type, "cpu"):
        ranked = sorted((m for m in models if kind in m.default_for), key=lambda m: m.default_for[kind])
        if ranked:
            return ranked[0]
    return models[0]


def load_task_model(task: str, model_id: str | None = None, device: "str | torch.device" = "cpu", *,
                    title: str = "") -> ModelEntry:
    """The card of ``model_id`` (checked to be a ``task`` model), or the cards' default for ``device``.

    ``title`` names the task in messages ("low-dose CT").
    """
    if model_id is None:
        return default_model(task, str(device).split(":")[0])
    entry = get_model(model_id)
    if entry.task != task:
        raise ValueError(f"model '{model_id}' is for task '{entry.task}', not {title or task} ('{task}'); see "
                         "'meddiff info' for the models of each task")
    return entry


def register_user_model(entry: ModelEntry, weights: str | os.PathLike | Mapping[str, torch.Tensor],
                        *, overwrite: bool = False) -> ModelEntry:
    """Store a model in the user folder and return its card as registered.

    ``weights`` is a safetensors file (copied) or a state dict (written). The file becomes
    ``<id>.safetensors``, its sha256 goes into the card, and the card ``<id>.json`` is written
    last, so a half-registered model never appears in :func:`list_models`.
    ``overwrite`` replaces an earlier user model with the same id; shipped ids are never reused.
    """
    ids = {m.id: m for m in list_models()}
    if entry.id in ids and (not ids[entry.id].user or not overwrite):
        where = "a shipped model" if not ids[entry.id].user else "a user model (pass overwrite=True to replace it)"
        raise ValueError(f"model id '{entry.id}' is already taken by {where}")
    folder = user_model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{entry.id}.safetensors"
    if isinstance(weights, Mapping):
        save_model(weights, target, {"model_id": entry.id, "version": entry.version})
    else:
        source = Path(weights)
        check_safetensors(source)
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    card = ModelEntry.from_dict({**entry.to_dict(), "weights": target.name, "sha256": sha256_file(target)},
                                folder=folder, user=True)
    text = json.dumps({"schema_version": SCHEMA_VERSION, **card.to_dict()}, indent=2)
    atomic_write(folder / f"{entry.id}.json", lambda tmp: tmp.write_text(text + "\n"))
    return card


# -- weights -----------------------------------------------------------------------------

def load_state_dict(entry: ModelEntry, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model's tensors, after checking the file's sha256 against the card."""
    if not entry.sha256:
        raise WeightsError(f"model '{entry.id}' has no sha256 in its card; refusing unverified weights")
    return load_weights(entry.weights_path, sha256=entry.sha256, device=device)


def load_weights(path: str | os.PathLike, *, sha256: str | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, refusing pickles and (when given) a wrong checksum."""
    path = Path(path)
    check_safetensors(path)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise WeightsError(f"checksum mismatch for {path}: the model card expects sha256 {sha256.lower()} "
                               f"but the file has {actual}; the file is corrupt or was replaced")
    import safetensors.torch

    return safetensors.torch.load_file(str(path), device=str(device))


def check_safetensors(path: Path) -> None:
    """Raise :class:`WeightsError` unless ``path`` is a readable safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise WeightsError(f"{path} looks like a pickled PyTorch file (torch.save), not safetensors. "
                           + _CONVERT_HINT)
    import safetensors

    try:  # open first: a safetensors header length may itself start with byte 0x80
        with safetensors.safe_open(str(path), framework="pt"):
            return
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        reason = str(exc)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise WeightsError(f"{path} looks like a pickled PyTorch file (torch.save), not safetensors. "
                           + _CONVERT_HINT)
    raise WeightsError(f"{path} is not a valid safetensors file ({reason}). " + _CONVERT_HINT)


def save_model(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Write tensors as safetensors atomically (temp file + rename).

    Metadata values that are not strings are stored as JSON text, since safetensors
    metadata is a string-to-string map.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights must be written as a .safetensors file, got {path.name}")
    tensors = _own_memory(state_dict)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    import safetensors.torch  # noqa: PLC0415 - torch loads only with weights

    return atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=meta))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- helpers -----------------------------------------------------------------------------

def _own_memory(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, cloning any that share storage (safetensors refuses aliases)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state dict entry '{name}' is a {type(tensor).__name__}, expected a tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return data


def _check_schema(data: Mapping[str, Any], path: Path) -> None:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {version!r}; this meddiffusion reads version "
                         f"{SCHEMA_VERSION} (update meddiffusion or re-register the model)")
