"""Load a model from a command-line spec: a checkpoint file, a torchvision name, or a shipped
checkpoint name (:func:`load_model`)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_model", "ModelSpecError", "torchvision_names"]


class ModelSpecError(ValueError):
    """A model spec that cannot be loaded; the message says why and what to pass instead."""


def torchvision_names() -> list[str]:
    """The model names torchvision can build."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_arch(arch: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """An untrained model of architecture ``arch`` shaped to fit ``state``."""
    from ..packing import build_architecture

    try:
        return build_architecture(arch, state)
    except ValueError:
        raise ModelSpecError(
            f"unknown --arch {arch!r}: use resnet20 or a torchvision name") from None


def _load_checkpoint(path: Path, arch: str | None) -> nn.Module:
    if not path.is_file():
        raise ModelSpecError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused (a whole pickled model) or not a torch file
        raise ModelSpecError(
            f"could not read {path} with torch.load(weights_only=True): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. Save a state_dict "
            "(torch.save(model.state_dict(), path))."
        ) from None
    if not isinstance(obj, Mapping):
        raise ModelSpecError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            arch = arch or obj.get("arch")
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelSpecError(f"{path} holds no tensors")
    if arch is None:
        raise ModelSpecError(
            f"{path} is a bare state_dict: pass --arch (resnet20 or a torchvision model name)"
        )
    model = _build_arch(arch, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelSpecError(
            f"{path} does not fit --arch {arch}: {str(e).splitlines()[0]}") from None
    return model.eval()


def load_model(
    spec: str, *, random_init: bool = False, arch: str | None = None
) -> tuple[nn.Module, str]:
    """The model named by ``spec`` and a one-line description of where its weights come from.

    ``spec``: an existing file (a state_dict checkpoint), a torchvision model name (pretrained
    unless ``random_init``), or a shipped checkpoint name (:func:`mixquant_lite.zoo.models.
    load_pretrained`). Raises :class:`ModelSpecError` with a clear message when it cannot be had;
    pretrained weights are never silently replaced by random ones.
    """
    from .models import (
        TORCHVISION_RESNETS,
        CheckpointError,
        PretrainedUnavailableError,
        load_pretrained,
        torchvision_resnet,
    )

    path = Path(spec)
    is_file = path.suffix in (".pt", ".pth", ".ckpt", ".bin") or path.exists()
    if random_init and (is_file or spec not in torchvision_names()):
        raise ModelSpecError("--random-init applies to torchvision model names only")
    if is_file:
        return _load_checkpoint(path, arch), f"checkpoint {path}"
    if spec in torchvision_names():
        try:
            if spec in TORCHVISION_RESNETS:
                model = torchvision_resnet(spec, pretrained=not random_init)
            else:
                import torchvision

                weights = None if random_init else "DEFAULT"
                try:
                    model = torchvision.models.get_model(spec, weights=weights).eval()
                except Exception as e:  # download / hash errors: no pretrained weights here
                    raise PretrainedUnavailableError(
                        f"pretrained weights for {spec} could not be loaded "
                        f"({type(e).__name__}: {e})"
                    ) from None
        except PretrainedUnavailableError as e:
            raise ModelSpecError(
                f"{e}\nPretrained weights are unavailable, and random ones are never used "
                "silently: pass --random-init to search on random weights knowingly."
            ) from None
        how = "RANDOM (untrained) weights" if random_init else "pretrained weights"
        return model, f"torchvision {spec}, {how}"
    try:
        return load_pretrained(spec), f"shipped checkpoint {spec}"
    except ValueError as e:
        raise ModelSpecError(
            f"unknown model {spec!r}: not a file, not a torchvision model name, and not a "
            f"shipped checkpoint ({e})"
        ) from None
    except CheckpointError as e:
        raise ModelSpecError(str(e)) from None
