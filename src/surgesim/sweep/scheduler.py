"""Dask executors of a sweep: the scheduler's address checked and resolved (``DASK_SCHEDULER_ADDRESS``),
its handshake probed within a time limit, and the tasks run as futures on a ``local:N`` cluster or a
running ``tcp://`` one. Dask is imported only here, and only when a Dask scheduler is used."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Generator
from contextlib import ExitStack
from typing import Any

from .errors import SchedulerTimeout
from .executors import Outcome, failure, run_task
from .tasks import Task

__all__ = ["CONNECT_TIMEOUT", "MAX_LOCAL_WORKERS_PER_CPU", "check_scheduler", "resolve_scheduler", "probe_scheduler",
           "import_distributed", "run_dask"]  # fmt: skip

_log = logging.getLogger("surgesim.sweep")

ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"
_DASK_URL = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):(\d{1,5})$")
_DIST_HINT = "pip install 'surgesim[dist]'"
CONNECT_TIMEOUT = 10.0  # seconds to reach a Dask scheduler and complete its handshake
MAX_LOCAL_WORKERS_PER_CPU = 8  # "local:N" beyond this would start more processes than help


def import_distributed(scheduler: str) -> Any:
    """``dask.distributed``, or a ValueError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise ValueError(f"scheduler {scheduler!r} needs Dask distributed: {_DIST_HINT}") from None
    return distributed


def probe_scheduler(distributed: Any, address: str, timeout: float) -> None:
    """Connect to ``address`` and complete Dask's handshake within ``timeout`` seconds, or raise a
    ConnectionError saying what answered: Dask's own client would wait forever on a peer that
    accepts and stays silent, and misread a peer that talks another protocol."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def handshake() -> None:
        comm = await asyncio.wait_for(distributed.comm.connect(address, timeout=timeout), timeout)
        await comm.close()

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller runs
        try:
            pool.submit(asyncio.run, handshake()).result()
        except (asyncio.TimeoutError, TimeoutError):  # ours: connected, but no Dask handshake came back
            raise SchedulerTimeout(
                f"no Dask scheduler answered at {address} within {timeout:g} s (a peer that accepts and stays "
                "silent, e.g. Dask's dashboard or a web server, is not a scheduler; schedulers listen on 8786 by "
                "default; connect_timeout sets the wait)"
            ) from None
        except OSError as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        except Exception as exc:  # a reply that is not Dask's protocol (a banner, an HTTP page)
            raise ConnectionError(
                f"the peer at {address} is not a Dask scheduler: its reply is not Dask's protocol "
                f"({type(exc).__name__})"
            ) from None


def run_dask(
    fn: Callable, pending: list[Task], shared: tuple, scheduler: str, connect_timeout: float = CONNECT_TIMEOUT
) -> Generator[tuple[int, Outcome], None, None]:
    """The tasks as futures on a Dask cluster (``local:N`` started here, or a running one)."""
    distributed = import_distributed(scheduler)
    with ExitStack() as stack:
        if scheduler.startswith("local:"):
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=int(scheduler[6:]),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )  # fmt: skip
            )
            _log.info("Dask LocalCluster at %s, dashboard %s", cluster.scheduler_address, cluster.dashboard_link)
            client = stack.enter_context(distributed.Client(cluster))
        else:  # reachable and a Dask scheduler: probed by run_sweep
            client = stack.enter_context(distributed.Client(scheduler, timeout=connect_timeout))
        # Scattered once (to every worker) and passed as a future: dask resolves it on the worker.
        shared_futures = [client.scatter([s], broadcast=True)[0] for s in shared]
        name = getattr(fn, "__name__", "task")
        futures = {
            client.submit(run_task, fn, t.params_json, *shared_futures, key=f"{name}-{uuid.uuid4().hex}"): t.position
            for t in pending
        }
        try:
            for fut in distributed.as_completed(list(futures)):
                try:
                    outcome = fut.result()
                except Exception as exc:  # the cluster failed the task: KilledWorker, lost connection
                    outcome = failure(exc)
                position = futures.pop(fut)
                fut.release()
                yield position, outcome
        finally:
            if futures:  # an early exit: cancel what is left rather than leave it on the cluster
                client.cancel(list(futures))


def _check_form(scheduler: str, source: str) -> str:
    if not isinstance(scheduler, str):
        raise TypeError(f"{source} must be a string or None, got {type(scheduler).__name__}: {scheduler!r}")
    if scheduler.startswith("local:"):
        n, most = scheduler[6:], MAX_LOCAL_WORKERS_PER_CPU * (os.cpu_count() or 1)
        if n.isdigit() and 1 <= int(n) <= most:
            return scheduler
        raise ValueError(f"{source} {scheduler!r}: 'local:N' needs a worker count N >= 1 and <= {most} "
                         f"({MAX_LOCAL_WORKERS_PER_CPU} per CPU of this machine)")  # fmt: skip
    m = _DASK_URL.match(scheduler)
    if m and 1 <= int(m.group(3)) <= 65535:
        return scheduler
    raise ValueError(f"{source} must be 'local:N' (N >= 1) or 'tcp://HOST:PORT', got {scheduler!r}")


def resolve_scheduler(scheduler: str | None) -> str | None:
    """The scheduler's checked address: ``scheduler``, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    if scheduler is not None:
        return _check_form(scheduler, "scheduler")
    env = os.environ.get(ENV_SCHEDULER, "").strip()
    return _check_form(env, f"environment variable {ENV_SCHEDULER}") if env else None


def check_scheduler(scheduler: str | None, connect_timeout: float = 10.0) -> str | None:
    """Check, before any work, the scheduler that ``run_sweep(scheduler=scheduler)`` would use
    (None: ``DASK_SCHEDULER_ADDRESS`` if set): its form, and for ``tcp://`` / ``tls://`` that a Dask
    scheduler answers within ``connect_timeout`` seconds. Returns the resolved address (None:
    local processes); an error names the environment variable when the address came from it."""
    resolved = resolve_scheduler(scheduler)
    if resolved is not None and not resolved.startswith("local:"):
        try:
            probe_scheduler(import_distributed(resolved), resolved, connect_timeout)
        except (ConnectionError, ValueError) as exc:
            if scheduler is None:
                raise type(exc)(f"environment variable {ENV_SCHEDULER}={resolved!r}: {exc}") from None
            raise
    return resolved
