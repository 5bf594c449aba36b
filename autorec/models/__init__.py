"""Every model of autorec, one family per file, and the one registry of them.

==============  ======================  =====================================
name            class                   file
==============  ======================  =====================================
``i-autorec``   :class:`IAutoRec`       ``autorec.py`` (with ``u-autorec``)
``kernel-i-...`` :class:`KernelIAutoRec` ``kernel_autorec.py``
``cdae``        :class:`CDAE`           ``cdae.py``
``mult-dae``    :class:`MultDAE`        ``mult.py`` (with ``mult-vae``)
``biased-mf``   :class:`BiasedMF`       ``biased_mf.py``
``ease``        :class:`EASE`           ``ease.py``
``als``         :class:`ALS`            ``als.py``
``bpr``         :class:`BPR`            ``bpr.py``
``lmf``         :class:`LMF`            ``lmf.py``
``pop``         :class:`Popularity`     ``popularity.py``
==============  ======================  =====================================

Shared code: ``base.py`` (the Recommender protocol: one ``recommend``, the file format),
``torch_base.py`` (what the torch models share; trained by :class:`autorec.train.Trainer`),
``_implicit_base.py`` (the ``implicit`` wrappers), ``_sparse_ops.py`` (sparse kernels).

The registry names each class by module, so ``autorec --help`` and ``import autorec``
list models without importing torch; a class is imported when it is first used.
"""
from __future__ import annotations

import importlib
from types import MappingProxyType

__all__ = ["MODELS", "MODEL_NAMES", "get_model", "load", "model_class"]

#: name -> "module:Class" (module relative to this package); the one explicit registry
_REGISTRY = {
    "i-autorec": "autorec:IAutoRec",
    "u-autorec": "autorec:UAutoRec",
    "kernel-i-autorec": "kernel_autorec:KernelIAutoRec",
    "cdae": "cdae:CDAE",
    "mult-dae": "mult:MultDAE",
    "mult-vae": "mult:MultVAE",
    "biased-mf": "biased_mf:BiasedMF",
    "ease": "ease:EASE",
    "als": "als:ALS",
    "bpr": "bpr:BPR",
    "lmf": "lmf:LMF",
    "pop": "popularity:Popularity",
}
MODEL_NAMES = tuple(_REGISTRY)
_BY_CLASS = {spec.split(":")[1]: name for name, spec in _REGISTRY.items()}


def model_class(name: str):
    """The class registered as ``name``; unknown names list the valid ones."""
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_model(name: str, **params):
    """Instantiate a registered model by name; unknown names list the valid ones."""
    return model_class(name)(**params)


def load(path, device: str | None = None):
    """Load a model written by ``model.save(path)``.

    Uses ``torch.load(..., weights_only=True)``: a file that holds anything but tensors and
    plain values is refused rather than unpickled. The file's digest is verified (files
    written before format 3 have none and load without that check), then every part is
    checked against the others before use: params against the class, weights' shapes and
    dtypes against the network the params build, factor and code matrices against the
    ids, index arrays against their bounds.

    Parameters
    ----------
    path : str or Path
    device : str, optional
        Override the saved ``device`` parameter of torch models (e.g. ``"cpu"``).

    Raises
    ------
    FileNotFoundError
    ModelFileError
        One message naming the file and what is wrong with it.
    """
    from .._validate import Invalid
    from ..exceptions import ModelFileError
    from ._format import read_model_file

    payload = read_model_file(path)
    cls_name = payload["class"]
    name = _BY_CLASS.get(cls_name) if isinstance(cls_name, str) else None
    if name is None:
        raise ModelFileError(f"{path}: unknown model class {cls_name!r}; this autorec has "
                             f"{', '.join(_BY_CLASS)}")
    try:
        return model_class(name)._from_payload(payload, device)
    except Invalid as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # a check the loader lacks
        raise ModelFileError(f"{path}: not a consistent {cls_name} model file "
                             f"({type(exc).__name__}: {exc})") from exc


def __getattr__(attr: str):
    if attr == "MODELS":  # name -> class, importing every model (and torch) on first use
        globals()["MODELS"] = MappingProxyType({name: model_class(name) for name in MODEL_NAMES})
        return globals()["MODELS"]
    if attr in _BY_CLASS:
        return model_class(_BY_CLASS[attr])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
