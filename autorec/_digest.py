"""A digest of saved state: sha256 over a canonical serialisation of tensors and plain values.

Model files and Trainer checkpoints store ``digest(payload)`` next to the payload and
verify it on load, so one flipped bit in stored weights (which ``torch.load`` does not
notice: it reads zip members without checking their CRC) is refused instead of scored.
The parsed-ratings cache uses the same digest over its numpy arrays.

The serialisation is type-tagged and length-prefixed, so different values never give the
same byte stream: ``1`` (int), ``1.0`` (float) and ``True`` (bool) differ, dict keys are
sorted by their encoding (insertion order does not matter), lists and tuples are the same
(``torch.save`` keeps tuples, but a re-saved file may turn one into the other), and a tensor
contributes its dtype, shape and raw bytes (hashed in place, not copied when contiguous).
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["digest", "DIGEST_KEY"]

#: the payload key that holds the digest (``{"sha256": hex}``); not part of what is hashed
DIGEST_KEY = "digest"


def digest(payload) -> str:
    """Hex sha256 of ``payload`` (a nest of dicts, lists, tensors, arrays and plain values),
    leaving out a top-level :data:`DIGEST_KEY` entry."""
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    h = hashlib.sha256()
    _feed(h, payload)
    return h.hexdigest()


def _feed(h, value) -> None:
    import torch  # only when there is state to hash: autorec imports without torch

    if value is None:
        h.update(b"N")
    elif isinstance(value, (bool, np.bool_)):
        h.update(b"B1" if value else b"B0")
    elif isinstance(value, (int, np.integer)):
        h.update(b"I%d;" % int(value))
    elif isinstance(value, (float, np.floating)):
        h.update(b"F" + float(value).hex().encode() + b";")
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(raw) + raw)
    elif isinstance(value, bytes):
        h.update(b"Y%d:" % len(value) + value)
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d:" % len(value))
        for item in value:
            _feed(h, item)
    elif isinstance(value, dict):
        entries = []
        for key, item in value.items():
            sub = hashlib.sha256()
            _feed(sub, key)
            entries.append((sub.digest(), key, item))
        entries.sort(key=lambda e: e[0])
        h.update(b"D%d:" % len(entries))
        for key_digest, _, item in entries:
            h.update(key_digest)
            _feed(h, item)
    elif isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout != torch.strided:
            raise TypeError(f"cannot digest a {t.layout} tensor")
        t = t.cpu().contiguous()
        h.update(b"T" + str(t.dtype).encode() + b"%r:" % (tuple(t.shape),))
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot digest an object array")
        a = np.ascontiguousarray(value)
        h.update(b"A" + a.dtype.str.encode() + b"%r:" % (a.shape,))
        if a.size:
            h.update(a.reshape(-1).view(np.uint8).data)
    else:
        raise TypeError(f"cannot digest a value of type {type(value).__name__}")
