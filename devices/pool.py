"""Measure artifacts on many devices at once, one Ray actor per device.

Each device's work is queued on its actor as soon as it is submitted, so a
device never waits on the host; the actor runs one measurement at a time.
The host only watches: it collects results, restarts actors that died or got
stuck, and gives up on a device (with an error per queued artifact, never a
hang) once it has been restarted `max_restarts` times.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError, RayError

from .agent import DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact
from .latency import Latency
from .protocol import MeasurementProtocol
from .registry import DeviceSpec, make_agent

CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MeasurementResult:
    """One artifact on one device: a latency, or the error that prevented it."""

    device: str
    arch_key: str
    latency: Latency | None
    error: MeasurementError | None


@ray.remote(num_cpus=0, max_concurrency=1)
class _AgentHost:
    """The agent's process. num_cpus=0: placement is by the device's custom resources."""

    def __init__(self) -> None:
        self._agent = None

    def start(self, spec: DeviceSpec) -> dict | str:
        """The agent's info(), or why it could not start (a str: it must reach the host intact)."""
        try:
            agent = make_agent(spec)
            agent.prepare()
            self._agent = agent
            return agent.info()
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency | MeasurementError:
        """Errors are returned, not raised, so the host tells them apart from a dead process."""
        if self._agent is None:
            return MeasurementError("device", "the device's agent did not start")
        try:
            return self._agent.measure(artifact, protocol)
        except MeasurementError as e:
            return e
        except Exception as e:
            return MeasurementError("runtime", f"the agent failed on {artifact.arch_key}: {type(e).__name__}: {e}")

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()


@dataclass
class _Job:
    """A call queued on a device's actor: its start, or one measurement."""

    ref: ray.ObjectRef | None  # set by DevicePool._enqueue for measurements
    arch_key: str = ""
    artifact: ray.ObjectRef | None = None  # None for the start call
    deaths: int = 0  # times the device's process died while running this job
    started: float = 0.0  # when it reached the head of the queue, as seen by the host: never early


@dataclass
class _Device:
    spec: DeviceSpec
    actor: ray.actor.ActorHandle
    jobs: deque[_Job] = field(default_factory=deque)
    restarts: int = 0
    broken: str = ""  # why the device is given up on; empty while healthy


class DevicePool:
    """One Ray actor per device instance; at most one measurement at a time on a device;
    every device kept busy while work is queued.

    measure_timeout_s counts from when the host sees a measurement reach the
    front of its device's queue (in poll), so a rarely polled pool notices a
    stuck device late, but never stops a measurement early.
    """

    def __init__(
        self,
        specs: list[DeviceSpec],
        protocol: MeasurementProtocol,
        *,
        start_timeout_s: float = 60,
        measure_timeout_s: float = 300,
        max_restarts: int = 2,
    ) -> None:
        if not specs:
            raise ValueError("a DevicePool needs at least one device")
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"device names must be unique; repeated: {duplicates}")
        self.specs = {s.name: s for s in specs}
        self.protocol = protocol
        self.start_timeout_s = start_timeout_s
        self.measure_timeout_s = measure_timeout_s
        self.max_restarts = max_restarts
        self._devices: dict[str, _Device] = {}
        self._stored: dict[tuple[str, str], ray.ObjectRef] = {}  # artifacts in the object store
        self._results: list[MeasurementResult] = []
        self._owns_ray = False

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> dict[str, dict]:
        """Start every device's agent; returns each device's info(). Raises DeviceUnavailable, never hangs."""
        if self._devices:
            raise RuntimeError("this DevicePool is already started")
        if not ray.is_initialized():
            # A cluster named by RAY_ADDRESS is joined (agents may live on its other nodes); otherwise a
            # fresh local instance is started, never one left behind by a killed run.
            quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
            if os.environ.get("RAY_ADDRESS"):
                ray.init(address=os.environ["RAY_ADDRESS"], **quiet)
            else:
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
            self._owns_ray = True
        try:
            for spec in self.specs.values():
                self._devices[spec.name] = _Device(spec, self._spawn(spec))
            return self._await_starts()
        except BaseException:
            self.close()
            raise

    def submit(self, device: str, artifact: ModelArtifact) -> None:
        """Queue a measurement; returns at once. Its result comes back from poll()."""
        if device not in self.specs:
            raise ValueError(f"unknown device {device!r}; this pool has: {', '.join(self.specs)}")
        if device not in self._devices:
            raise RuntimeError("the DevicePool is not running: call start() before submit()")
        d = self._devices[device]
        if d.broken:
            error = MeasurementError("device", d.broken)
            self._results.append(MeasurementResult(device, artifact.arch_key, None, error))
            return
        key = (artifact.arch_key, artifact.sha256)
        if key not in self._stored:
            self._stored[key] = ray.put(artifact)
        self._enqueue(d, _Job(ref=None, arch_key=artifact.arch_key, artifact=self._stored[key]))

    def poll(self, timeout: float = 0.0) -> list[MeasurementResult]:
        """Results finished so far, waiting up to `timeout` seconds for at least one."""
        end = time.monotonic() + timeout
        while True:
            self._collect(min(end, self._next_deadline()) - time.monotonic())
            self._expire_overdue()
            if self._results or time.monotonic() >= end or not self.pending():
                results, self._results = self._results, []
                return results

    def pending(self) -> int:
        """Measurements submitted whose results poll() has not returned yet."""
        queued = sum(job.artifact is not None for d in self._devices.values() for job in d.jobs)
        return queued + len(self._results)

    def close(self) -> None:
        """Close idle agents, kill every actor (queued work is dropped), and stop Ray if this pool started it."""
        idle = [d.actor.close.remote() for d in self._devices.values() if not d.jobs and not d.broken]
        if idle:
            ray.wait(idle, num_returns=len(idle), timeout=CLOSE_TIMEOUT_S)
        for d in self._devices.values():
            ray.kill(d.actor, no_restart=True)
        self._devices.clear()
        self._stored.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # -- starting -----------------------------------------------------------------

    def _spawn(self, spec: DeviceSpec) -> ray.actor.ActorHandle:
        return _AgentHost.options(resources=dict(spec.ray_resources)).remote()

    def _await_starts(self) -> dict[str, dict]:
        starts = {}
        for d in self._devices.values():
            self._enqueue(d, _Job(ref=d.actor.start.remote(d.spec)))
            starts[d.jobs[0].ref] = d
        ready, _ = ray.wait(list(starts), num_returns=len(starts), timeout=self.start_timeout_s)
        infos = {}
        for ref, d in starts.items():
            if ref not in ready:
                raise DeviceUnavailable(self._unscheduled_message(d.spec))
            try:
                info = ray.get(ref)
            except RayError as e:
                raise DeviceUnavailable(
                    f"device {d.spec.name!r}: its process died while starting ({_first_line(e)}); "
                    f"check the device with its agent kind {d.spec.kind!r}"
                ) from e
            if isinstance(info, str):
                raise DeviceUnavailable(f"device {d.spec.name!r} could not start: {info}")
            d.jobs.popleft()
            infos[d.spec.name] = info
        return infos

    def _unscheduled_message(self, spec: DeviceSpec) -> str:
        available = ray.cluster_resources()
        missing = {k: v for k, v in spec.ray_resources.items() if available.get(k, 0) < v}
        if missing:
            return (
                f"device {spec.name!r} could not be scheduled within {self.start_timeout_s:g} s: no Ray node offers "
                f"resources {missing}; start a node with those resources (ray start --resources="
                f"'{json.dumps(missing)}') or remove the device"
            )
        return (
            f"device {spec.name!r} did not start within {self.start_timeout_s:g} s: its agent's prepare() has not "
            f"finished; check the device, or raise start_timeout_s"
        )

    # -- running ------------------------------------------------------------------

    def _enqueue(self, d: _Device, job: _Job) -> None:
        """Queue the job on the device's actor ((re)sending a measurement); the head's clock starts now."""
        if job.artifact is not None:
            job.ref = d.actor.measure.remote(job.artifact, self.protocol)
        if not d.jobs:
            job.started = time.monotonic()
        d.jobs.append(job)

    def _collect(self, wait_s: float) -> None:
        """Wait up to wait_s for any job to finish, then take every finished one."""
        refs = [job.ref for d in self._devices.values() for job in d.jobs]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=max(wait_s, 0.0))
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        for d in self._devices.values():
            while d.jobs and d.jobs[0].ref in done:  # a device finishes its jobs in order
                if not self._finish_head(d):
                    break
        live = {job.artifact for d in self._devices.values() for job in d.jobs}
        self._stored = {key: ref for key, ref in self._stored.items() if ref in live}

    def _finish_head(self, d: _Device) -> bool:
        """Take the result of the device's first job; False if the device had to be restarted."""
        job = d.jobs[0]
        try:
            value = ray.get(job.ref)
        except RayActorError as e:
            job.deaths += 1
            self._restart(d, f"its process died ({_first_line(e)})")
            return False
        except RayError as e:
            value = MeasurementError("device", f"Ray could not run the measurement: {_first_line(e)}")
        d.jobs.popleft()
        if d.jobs:
            d.jobs[0].started = time.monotonic()
        if job.artifact is None:  # a restarted agent's start
            if isinstance(value, str):
                self._give_up(d, f"device {d.spec.name!r} could not restart: {value}")
        elif isinstance(value, MeasurementError):
            self._report(d, job, error=value)
        else:
            self._report(d, job, latency=value)
        return True

    def _expire_overdue(self) -> None:
        now = time.monotonic()
        for d in self._devices.values():
            if d.jobs and now >= self._deadline(d.jobs[0]):
                job = d.jobs[0]
                if job.artifact is None:
                    self._restart(d, f"its agent did not restart within {self.start_timeout_s:g} s")
                    continue
                d.jobs.popleft()
                why = (
                    f"{job.arch_key} did not finish on device {d.spec.name!r} within {self.measure_timeout_s:g} s "
                    f"(its stuck agent was stopped); if the model is just slow, raise measure_timeout_s"
                )
                self._report(d, job, error=MeasurementError("timeout", why))
                self._restart(d, "a measurement timed out")

    def _deadline(self, job: _Job) -> float:
        return job.started + (self.start_timeout_s if job.artifact is None else self.measure_timeout_s)

    def _next_deadline(self) -> float:
        return min((self._deadline(d.jobs[0]) for d in self._devices.values() if d.jobs), default=float("inf"))

    def _restart(self, d: _Device, reason: str) -> None:
        """Replace the device's actor and requeue its measurements, or give the device up.

        A measurement that was running during two deaths is not retried: the
        model, not the device, is probably what crashes.
        """
        ray.kill(d.actor, no_restart=True)
        jobs = [job for job in d.jobs if job.artifact is not None]
        d.jobs.clear()
        if jobs and jobs[0].deaths >= 2:
            why = f"device {d.spec.name!r} died twice while measuring this model; it likely crashes the runtime"
            self._report(d, jobs.pop(0), error=MeasurementError("device", why))
        if d.restarts >= self.max_restarts:
            d.jobs.extend(jobs)
            allowed = f"its {self.max_restarts} allowed restarts are used up"
            self._give_up(d, f"device {d.spec.name!r} is unavailable: {reason}, and {allowed}")
            return
        d.restarts += 1
        d.actor = self._spawn(d.spec)
        self._enqueue(d, _Job(ref=d.actor.start.remote(d.spec)))
        for job in jobs:
            self._enqueue(d, job)

    def _give_up(self, d: _Device, why: str) -> None:
        """Mark the device broken and fail its queued work; later submissions fail at once."""
        ray.kill(d.actor, no_restart=True)
        d.broken = why
        for job in d.jobs:
            if job.artifact is not None:
                self._report(d, job, error=MeasurementError("device", why))
        d.jobs.clear()

    def _report(
        self, d: _Device, job: _Job, *, latency: Latency | None = None, error: MeasurementError | None = None
    ) -> None:
        self._results.append(MeasurementResult(d.spec.name, job.arch_key, latency, error))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
