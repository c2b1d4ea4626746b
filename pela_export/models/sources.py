"""Model sources, one registered loader per spec scheme.

``timm:<name>`` (``--pretrained``: timm's weights), ``timm:hf-hub:ORG/NAME``, ``hf:<local dir>``,
``hf:ORG/NAME`` (hub repos through the Hugging Face hub cache), ``<file>.pt2`` (torch.export program),
``package.module:factory`` and ``default[:recipe]`` (the embedded default).
Each returns a :class:`LoadedModel`; shapes come from the model's own config
where it has one, else from ``--input-shape``.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._registry import Registry
from ..errors import DependencyError, InputShapeError, ModelSourceError, OptionError
from .base import LoadedModel, Preprocessing, Tolerance
from .checkpoint import load_checkpoint
from .fx_linear import linears_to_modules

Loader = Callable[..., LoadedModel]  # (spec, checkpoint, input_shape, **source options)
SOURCES: Registry[Loader] = Registry("model source")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _shape(user: tuple[int, ...] | None, config: tuple[int, ...] | None, what: str) -> tuple[tuple[int, ...], str]:
    if user is not None:
        return tuple(user), "user"
    if config is not None:
        return tuple(int(d) for d in config), "config"
    raise InputShapeError(f"{what} does not declare its input shape",
                          fix="pass --input-shape C,H,W (without the batch dimension), e.g. --input-shape 3,224,224")


def _timm_family(model: nn.Module) -> str:
    name = type(model).__name__.lower()
    return "timm-swin" if "swin" in name else "timm-vit" if "visiontransformer" in name else "timm"


def timm_preprocessing(cfg: dict, shape: tuple[int, int, int]) -> Preprocessing:
    """timm's eval transform for data config ``cfg`` at input ``shape``, as deploy.json records it.

    ``transforms_imagenet_eval``: resize the 8-bit PIL image (Pillow, antialiased) so the
    target grows to floor(side / crop_pct) — the shorter side for ``center`` (aspect kept),
    both sides for ``squash``, the longer side plus padding with round(255 · mean) for
    ``border`` — centre crop to the input size, /255, normalise.
    """
    import math

    from timm.data.constants import DEFAULT_CROP_PCT

    c, h, w = (int(d) for d in shape)
    pct = float(cfg.get("crop_pct") or DEFAULT_CROP_PCT)
    scale = (math.floor(h / pct), math.floor(w / pct))
    crop_mode = cfg.get("crop_mode") or "center"
    mode, resize_size, fill = {"squash": ("squash", scale, ()),
                               "border": ("fit_longer", scale, tuple(float(round(255 * m)) for m in cfg["mean"]))
                               }.get(crop_mode, ("shorter_side", scale[:1], ()) if scale[0] == scale[1]
                                     else ("fit_shorter", scale, ()))
    interp = str(cfg.get("interpolation") or "bilinear")
    return Preprocessing(tuple(cfg["mean"]), tuple(cfg["std"]), (h, w), c, input_range=(0.0, 255.0),
                         interpolation="bilinear" if interp == "random" else interp, antialias=True,
                         resize_mode=mode, resize_size=resize_size, crop_pct=pct, crop_offset="round",
                         resize_dtype="uint8", pad_fill=fill)


def _from_timm_model(model: nn.Module, name: str, source: str, user_shape: tuple[int, ...] | None) -> LoadedModel:
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    config_shape = tuple(cfg["input_size"])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and len(config_shape) == 3:  # built with img_size=...: pretrained_cfg still says 224
        config_shape = (config_shape[0], *(int(d) for d in img_size))
    shape, origin = _shape(user_shape, config_shape, f"timm model {name!r}")
    pre = timm_preprocessing(cfg, shape) if len(shape) == 3 else None  # type: ignore[arg-type]
    return LoadedModel(model.eval(), name, source, shape, origin, preprocessing=pre,
                       num_classes=getattr(model, "num_classes", None), family=_timm_family(model),
                       tolerance=Tolerance(atol=1e-4, rtol=1e-3))


@SOURCES.register("timm")
def load_timm(spec: str, checkpoint: str | None, user_shape: tuple[int, ...] | None, *,
              pretrained: bool = False) -> LoadedModel:
    """``timm:NAME`` (random weights, or timm's pretrained ones with ``pretrained``) or ``timm:hf-hub:ORG/NAME``.

    Pretrained weights come through the Hugging Face hub cache (:mod:`.timm_hub`).
    """
    import timm

    name = spec.split(":", 1)[1]
    if name.startswith("hf-hub:"):
        from .timm_hub import create_from_hub

        repo = name.split(":", 1)[1]
        model, note = create_from_hub(repo)
        name = repo.partition("@")[0].rsplit("/", 1)[-1]
    else:
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:5] if name else []
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ModelSourceError(f"unknown timm model {name!r}{hint}",
                                   fix="pass timm:<name> with a name from timm.list_models(), or timm:hf-hub:ORG/NAME")
        if pretrained:
            from .timm_hub import create_pretrained

            model, note = create_pretrained(name)
        else:
            model, note = timm.create_model(name, pretrained=False), "random (no --pretrained or --checkpoint given)"
    notes = load_checkpoint(model, checkpoint) if checkpoint else []
    loaded = _from_timm_model(model, name, spec, user_shape)
    loaded.extra["checkpoint_notes"] = notes
    loaded.extra["weights"] = weights_note(note, checkpoint)
    return loaded


def weights_note(base: str, checkpoint: str | None) -> str:
    """Where the weights came from, for ``LoadedModel.extra["weights"]`` (a checkpoint loads over the base)."""
    if checkpoint is None:
        return base
    return f"checkpoint {checkpoint}" + ("" if base.startswith("random") else f" (loaded over {base})")


@SOURCES.register("hf")
def load_hf(spec: str, checkpoint: str | None, user_shape: tuple[int, ...] | None, *,
            max_length: int | None = None, hidden_state: bool = False) -> LoadedModel:
    """``hf:DIR`` (an existing directory) or ``hf:ORG/NAME[@REV]`` (a hub repo, through the hub cache)."""
    from .hf import load_hf_target

    return load_hf_target(spec.split(":", 1)[1], checkpoint, user_shape, max_length=max_length,
                          hidden_state=hidden_state)


@SOURCES.register("pt2")
def load_pt2(spec: str, checkpoint: str | None, user_shape: tuple[int, ...] | None) -> LoadedModel:
    path = Path(spec)
    if not path.is_file():
        raise ModelSourceError(f"torch.export program {spec!r} not found", fix="pass the path of an existing .pt2 file")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelSourceError(f"{spec!r} is not a loadable torch.export program ({type(exc).__name__}: {str(exc)[:200]})",
                               fix="save it with torch.export.save(torch.export.export(model, args), 'model.pt2')") from None
    example = program.example_inputs[0] if program.example_inputs else ()
    config = tuple(example[0].shape[1:]) if example and isinstance(example[0], torch.Tensor) else None
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    val = placeholders[0].meta.get("val") if placeholders else None
    if val is not None and getattr(val, "ndim", 0) > 0 and isinstance(val.shape[0], int):
        raise ModelSourceError(
            f"program {spec!r} was exported with a static batch size of {val.shape[0]}",
            fix="re-export with a dynamic batch dimension: torch.export.export(model, args, "
                "dynamic_shapes=({0: torch.export.Dim('batch')},))")
    module = linears_to_modules(program.module())
    if checkpoint:
        load_checkpoint(module, checkpoint)
    shape, origin = _shape(user_shape, config, f"program {spec!r}")
    dtype = example[0].dtype if example else torch.float32
    return LoadedModel(module, path.stem, spec, shape, "example_inputs" if origin == "config" else origin,
                       input_dtype=dtype, family="torch.export")


@SOURCES.register("factory")
def load_factory(spec: str, checkpoint: str | None, user_shape: tuple[int, ...] | None) -> LoadedModel:
    mod_name, fn_name = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelSourceError(f"cannot import module {mod_name!r} for factory {spec!r} ({exc})",
                               fix="make the package importable (pip install it or set PYTHONPATH)") from None
    factory = getattr(module, fn_name, None)
    if not callable(factory):
        raise ModelSourceError(f"module {mod_name!r} has no callable {fn_name!r}",
                               fix="pass package.module:function where function() returns an nn.Module")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"factory {spec!r} returned {type(model).__name__}, not an nn.Module",
                               fix="make the factory return a torch.nn.Module")
    notes = load_checkpoint(model, checkpoint) if checkpoint else []
    if hasattr(model, "pretrained_cfg"):  # a timm model built by the user's own factory
        loaded = _from_timm_model(model, fn_name, spec, user_shape)
    else:
        cfg = getattr(model, "default_input_shape", None)
        shape, origin = _shape(user_shape, cfg, f"model from factory {spec!r}")
        loaded = LoadedModel(model.eval(), fn_name, spec, shape, origin, num_classes=getattr(model, "num_classes", None))
    loaded.extra["checkpoint_notes"] = notes
    return loaded


@SOURCES.register("default")
def load_default(spec: str, checkpoint: str | None, user_shape: tuple[int, ...] | None) -> LoadedModel:
    from .default import load_default_model

    recipe = spec.split(":", 1)[1] if ":" in spec else "digits"
    if checkpoint or user_shape:
        raise ModelSourceError("the embedded default model takes no --checkpoint or --input-shape",
                               fix="drop those flags, or name your own model (timm:NAME, hf:DIR, FILE.pt2, pkg.mod:factory)")
    return load_default_model(recipe)


def scheme_of(spec: str | None) -> str:
    """Which registered source handles ``spec`` (None → the embedded default)."""
    if spec is None or spec == "default" or spec.startswith("default:"):
        return "default"
    if spec.startswith("timm:"):
        return "timm"
    if spec.startswith("hf:"):
        return "hf"
    if spec.endswith(".pt2"):
        return "pt2"
    if _FACTORY_RE.match(spec):
        return "factory"
    raise ModelSourceError(
        f"cannot tell what kind of model {spec!r} is",
        fix="use timm:NAME, hf:LOCAL_DIR, hf:ORG/NAME, FILE.pt2, package.module:factory, or omit MODEL for the "
            "embedded default",
    )


def check_forward(loaded: LoadedModel) -> None:
    """Run one forward pass at batch 1 so a wrong input shape fails here, clearly."""
    try:
        with torch.no_grad():
            loaded.model(*loaded.dummy_inputs(1))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputShapeError(
            f"model {loaded.name!r} fails on input shape {(1, *loaded.input_shape)} ({loaded.input_shape_origin}): {first}",
            fix="pass --input-shape with the shape the model expects, without the batch dimension (e.g. 3,224,224)",
        ) from None


def resolve_model(spec: str | None = None, checkpoint: str | None = None,
                  input_shape: tuple[int, ...] | None = None, check: bool = True, *,
                  max_length: int | None = None, hidden_state: bool = False, pretrained: bool = False) -> LoadedModel:
    """Turn a model spec into a :class:`LoadedModel` (eval mode), checking it runs.

    ``max_length``/``hidden_state`` are text-model options (``hf:`` text models only);
    ``pretrained`` loads timm's pretrained weights (``timm:`` models only), through the hub cache.
    """
    scheme = scheme_of(spec)
    if (max_length is not None or hidden_state) and scheme != "hf":
        raise OptionError("--max-length and --hidden-state apply to Hugging Face text models (hf:DIR, hf:ORG/NAME) "
                          "only", fix=f"drop them for this {scheme} model")
    if pretrained and scheme != "timm":
        raise OptionError(f"--pretrained applies to timm:NAME models only, not this {scheme} model",
                          fix="drop --pretrained: hf:ORG/NAME and timm:hf-hub:ORG/NAME load their hub weights "
                              "already, other models take --checkpoint FILE")
    if checkpoint is not None and scheme not in ("default",) and not Path(checkpoint).is_file():
        from ..errors import CheckpointError

        raise CheckpointError(f"checkpoint {checkpoint!r} not found", fix="pass --checkpoint with an existing file")
    kwargs: dict[str, Any] = {}
    if scheme == "hf" and (max_length is not None or hidden_state):
        kwargs = {"max_length": max_length, "hidden_state": hidden_state}
    elif pretrained:
        kwargs = {"pretrained": True}
    try:
        loaded = SOURCES.get(scheme)(spec or "default", checkpoint, input_shape, **kwargs)
    except ImportError as exc:
        raise DependencyError(f"model source {scheme!r} needs a missing package ({exc.name or exc})",
                              fix="pip install 'pela-export[hf]'" if scheme == "hf" else f"pip install {exc.name}") from None
    if check:
        check_forward(loaded)
    return loaded


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'3,224,224' or '3x224x224' → (3, 224, 224); no batch dimension."""
    parts = [p for p in re.split(r"[,x× ]+", text.strip()) if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputShapeError(f"invalid --input-shape {text!r}",
                              fix="pass positive integers without the batch dimension, e.g. --input-shape 3,224,224")
    return dims
