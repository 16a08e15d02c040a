"""The probe's states on a training run: checkpoints of the reference run at each target loss
(``reference_checkpoints``), checkpoints read back (``load_checkpoint``: ``protocol.save_checkpoint``'s
format, a plain state_dict, or a dict with ``model`` and optionally Adam's ``optimizer`` saved by
other code), and the probe state at a checkpoint (``workload_state``: G, Adam's buffers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import protocol
from .probe_state import AdamState, ProbeState, full_gradient

__all__ = ["load_checkpoint", "reference_checkpoints", "workload_state"]


def load_checkpoint(path: str | os.PathLike, spec: protocol.RunSpec) -> tuple[torch.nn.Module, AdamState | None, dict]:
    """(model of ``spec``'s workload with the checkpoint's weights, Adam state or None, metadata).

    Raises ValueError naming the file when it is unreadable or does not match the model.
    """
    ckpt = _read(path, spec)
    state_dict = ckpt.get("model", ckpt)
    model = protocol.build_model(spec)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"checkpoint {path} does not match the {spec.workload} model: {detail}") from None
    adam = _adam_state(ckpt.get("optimizer"), model, spec, path) if "model" in ckpt else None
    meta = {k: ckpt.get(k) for k in ("target_loss", "steps", "loss")}
    return model, adam, meta


def _adam_state(sd, model: torch.nn.Module, spec: protocol.RunSpec, path) -> AdamState | None:
    if not sd:
        return None
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        group = sd["param_groups"][0]
        states = [sd["state"].get(i, sd["state"].get(str(i))) for i in range(len(params))]
        if any(s is None or "exp_avg" not in s for s in states):  # never stepped
            return None
        flat = lambda key: torch.cat([s[key].reshape(-1).to(torch.float64) for s in states])  # noqa: E731
        beta1, beta2 = group["betas"]
        return AdamState(flat("exp_avg"), flat("exp_avg_sq"), int(float(states[0]["step"])), float(beta1),
                         float(beta2), float(group["eps"]))  # fmt: skip
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {path}: the optimizer state is not Adam's for this model ({exc})") from None


def _read(path: str | os.PathLike, spec: protocol.RunSpec | None = None) -> dict:
    """The dict a ``torch.save`` file holds, on ``spec``'s device (CPU without a spec); ValueError
    naming the file for anything else (checked before ``spec`` is used)."""
    with open(path, "rb") as f:  # FileNotFoundError as it is
        head = f.read(4)
    if not head:
        raise ValueError(f"checkpoint {path} is an empty file, not a PyTorch checkpoint (torch.save)")
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip format, or the legacy pickle
        raise ValueError(f"checkpoint {path} is not a PyTorch checkpoint (torch.save): it starts with {head!r}")
    try:
        ckpt = torch.load(path, map_location=spec.device if spec else "cpu", weights_only=True)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {path} (a damaged or truncated file?): {detail}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a state_dict")
    return ckpt


def reference_checkpoints(
    spec: protocol.RunSpec, directory: Path, say: Callable[[str], None] = lambda s: None
) -> list[dict]:
    """Train ``spec`` (the reference run) and checkpoint it at the first evaluation reaching each
    target loss, into ``directory/target_<loss>.pt``; a target whose checkpoint exists is not
    trained for again (a rerun resumes). Returns, per reached target, ``target_loss``, ``steps``,
    ``loss`` and ``checkpoint`` (path); targets not reached within ``max_steps`` are left out."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {t: protocol.checkpoint_path(directory, t) for t in spec.targets}
    saved = {t: _same_reference(p, spec) for t, p in paths.items() if p.exists()}
    if len(saved) < len(paths):
        trainer = protocol.Trainer(spec)
        start = time.perf_counter()

        def save(r: protocol.TargetRecord) -> None:
            protocol.save_checkpoint(paths[r.target_loss], trainer, r)
            say(f"reference run reached loss {r.target_loss:g} at step {r.crossing_step} "
                f"({time.perf_counter() - start:.0f} s)")  # fmt: skip

        protocol.follow_targets(
            trainer.step, trainer.loss, spec.targets, further_steps=0, max_steps=spec.max_steps,
            eval_rel=spec.eval_rel, dense_steps=spec.dense_steps, diverge_factor=spec.diverge_factor,
            stall_factor=spec.stall_factor, on_cross=save,
        )  # fmt: skip
        saved = {t: _read(p) for t, p in paths.items() if p.exists()}  # this run's
    return [{"target_loss": t, "steps": m["steps"], "loss": m["loss"], "checkpoint": str(paths[t])}
            for t, m in saved.items()]  # fmt: skip


def _same_reference(path: Path, spec: protocol.RunSpec) -> dict:
    """The checkpoint at ``path``, refused (ValueError) when another reference run wrote it: reusing
    it would probe states that this run's spec did not train (say, after the grid's middle batch
    size moved)."""
    ckpt = _read(path)
    saved, want = ckpt.get("spec"), spec.to_params()
    if isinstance(saved, dict) and saved != want:
        diff = ", ".join(f"{k} {saved.get(k)!r} (now {want.get(k)!r})" for k in sorted(saved.keys() | want.keys())
                         if saved.get(k) != want.get(k))  # fmt: skip
        raise ValueError(f"{path} was written by another reference run ({diff}): choose another --out, or delete "
                         f"{path.parent} to train this run's reference")  # fmt: skip
    return ckpt


def workload_state(
    checkpoint: str, spec: protocol.RunSpec, full_gradient_examples: int = 0, adam: dict | None = None
) -> ProbeState:
    """The probe's state at a checkpoint of ``spec``'s workload: its data, G over the whole data
    set (``full_gradient_examples`` 0 or at least its size) or a uniform sample of that many
    examples (error propagated), and Adam's buffers from the checkpoint (else zeros with the
    hyper-parameters ``adam``)."""
    model, adam_state, _ = load_checkpoint(checkpoint, spec)
    data = protocol.load_data(spec)
    G, error = full_gradient(model, data.loss, data, min(full_gradient_examples or data.n, data.n))
    if adam_state is None:
        adam_state = AdamState.zeros(G.numel(), **(adam or {}))
    return ProbeState(model, data.loss, data, G, gradient_error=error, adam=adam_state)
