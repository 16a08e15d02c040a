"""Real-workload training (optional: ``pip install torch==2.13.0``, a CPU build, then from the source
tree ``pip install -e '.[train]'``): the three workloads of Section 3.1 of Li et al. 2024 in
PyTorch, their datasets, the grid-search protocol of Section 3.2-3.3, and per-example gradient
statistics that predict B_noise (eq 14) and eps_max (eq 16) from the network itself.

- ``models``: ``FiveLayerCNN`` (Fashion-MNIST), ``ResNet18`` (Tiny-ImageNet), ``CausalTransformer``
  (DistilGPT2-style, byte-level, for ELI5-Category).
- ``data``: loaders for the real file formats (nothing is downloaded) and offline demo data.
- ``run_spec``, ``training``, ``protocol``: a run's ``RunSpec``, its ``Trainer``, and the protocol's
  tasks: ``run_task(params) -> rows``, one (lr, B, seed) run of the grid, for
  ``surgesim.sweep.run_sweep``; ``gradient_task`` measures eq 14/16 along a reference run.
- ``grid``, ``grid_cost``, ``grid_run``: the grid's defaults and reference run, its time estimate,
  and one grid run (``python -m sims.workloads``).
- ``schedules``, ``schedule_run``: batch-size and learning-rate schedules (constant, B_simple, B_crit,
  geometric) run with the grid's protocol, and one study (``python -m sims.schedules --workload``).
- the probe, Lemma 1 measured at a state (``python -m sims.probe``): the state (``probe_state``,
  ``probe_checkpoints``, ``user_model``), the estimators (``probe_statistics``: B_simple, B_crit,
  eq 14; ``probe_estimators``: lr*(B); ``probe_multistep``: T Adam steps; ``probe`` re-exports
  them), the sweep tasks (``probing``) and one run (``probe_run``). ``probe_model`` probes any
  model at its weights and returns a ``ProbeResult`` (``.table``, ``.summary``, ``.to_csv``).
- ``gradstats``: per-example gradient moments (``torch.func``), Hessian-vector products and
  Hutchinson's diag(H), giving ``noise_scale``.

The analysis of the resulting grids is ``surgesim.gridfit`` (no torch). torch is imported only
inside this package.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._install import TORCH

    raise ImportError(f"surgesim.workloads needs PyTorch: {TORCH}") from exc

from . import data, gradstats, models, protocol
from .gradstats import GradientMoments, NoiseScale, gradient_moments, hessian_vector_product, noise_scale
from .models import CausalTransformer, FiveLayerCNN, ResNet18, count_parameters
from .protocol import RunSpec, follow_targets, gradient_task, grid_tasks, run_task


def probe_model(*args, **kwargs):
    """``surgesim.workloads.probing.probe_model``: Lemma 1 measured on any model (imported on use)."""
    from .probing import probe_model as _probe_model

    return _probe_model(*args, **kwargs)


__all__ = [
    "CausalTransformer",
    "FiveLayerCNN",
    "GradientMoments",
    "NoiseScale",
    "ResNet18",
    "RunSpec",
    "count_parameters",
    "data",
    "follow_targets",
    "gradient_moments",
    "gradient_task",
    "gradstats",
    "grid_tasks",
    "hessian_vector_product",
    "models",
    "noise_scale",
    "probe_model",
    "protocol",
    "run_task",
]
