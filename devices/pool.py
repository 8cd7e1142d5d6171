"""Measure artifacts on many devices at once, one Ray actor per device.

Work waits on the host in one queue per device and goes to the device's actor in batches (at
most `drift_check_every` artifacts, the span of one drift check), two batches in flight so the
device never waits on the host between them. The actor runs one batch at a time between two
measurements of the reference model (`devices.drift`).

The host watches: it collects results, and when a batch's process dies or the batch overruns
its time, it restarts the actor and sends the batch's artifacts again one at a time, so the
model at fault is found and reported without failing the others. A device restarted more than
`max_restarts` times is given up: its queued work fails with an error, never a hang.
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
from .drift import DriftCheckedAgent
from .latency import Latency
from .protocol import MeasurementProtocol
from .registry import DeviceSpec, agent_class, make_agent

CLOSE_TIMEOUT_S = 10.0
BATCHES_IN_FLIGHT = 2


@dataclass(frozen=True)
class MeasurementResult:
    """One artifact on one device: a latency, or the error that prevented it."""

    device: str
    structure_key: str
    latency: Latency | None
    error: MeasurementError | None


@ray.remote(num_cpus=0, max_concurrency=1)
class _AgentHost:
    """The agent's process. num_cpus=0: placement is by the device's custom resources (and GPUs)."""

    def __init__(self) -> None:
        self._agent: DriftCheckedAgent | None = None

    def start(self, spec: DeviceSpec) -> dict | str:
        """The agent's info(), or why it could not start (a str: it must reach the host intact)."""
        try:
            agent = make_agent(spec)
            agent.prepare()
            self._agent = DriftCheckedAgent(agent)
            return agent.info()
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    def measure_batch(self, protocol: MeasurementProtocol,
                      *artifacts: ModelArtifact) -> list[Latency | MeasurementError | DeviceUnavailable]:
        """Errors are returned, not raised, so the host tells them apart from a dead process.

        A DeviceUnavailable in place of a result means the device was lost before that artifact.
        """
        if self._agent is None:
            return [MeasurementError("device", "the device's agent did not start")] * len(artifacts)
        return self._agent.measure_batch(list(artifacts), protocol)

    def close(self) -> None:
        if self._agent is not None:
            self._agent.agent.close()


@dataclass
class _Item:
    """One artifact waiting for, or in, a measurement on one device."""

    structure_key: str
    artifact: ray.ObjectRef
    strikes: int = 0  # batches holding it that died or overran; struck items are measured alone


@dataclass
class _Call:
    """A call in flight on a device's actor: its start (no items) or one batch."""

    ref: ray.ObjectRef
    items: list[_Item]
    started: float = 0.0  # when it reached the head of the device's calls, as the host saw it


@dataclass
class _Device:
    spec: DeviceSpec
    protocol: MeasurementProtocol
    actor: ray.actor.ActorHandle
    queue: deque[_Item] = field(default_factory=deque)
    calls: deque[_Call] = field(default_factory=deque)
    restarts: int = 0
    broken: str = ""  # why the device is given up on; empty while healthy


class DevicePool:
    """One Ray actor per device instance; every device kept busy while work is queued.

    `protocol` is the run's measurement protocol; a device's `measurement` settings override it.
    `measure_timeout_s` is the longest one measurement may take: a batch of n artifacts may take
    (2n + 3) times that (each artifact twice if drift forces a repeat, and three references).
    It counts from when the host sees the batch reach the front of its device's calls, so a
    rarely polled pool notices a stuck device late, but never stops a batch early.
    """

    def __init__(
        self,
        specs: list[DeviceSpec],
        protocol: MeasurementProtocol,
        *,
        start_timeout_s: float = 180,  # above ssh-tvm's own runner start timeout; agents start slowly on a busy host
        measure_timeout_s: float = 120,
        max_restarts: int = 2,
    ) -> None:
        if not specs:
            raise ValueError("a DevicePool needs at least one device")
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"device names must be unique; repeated: {duplicates}")
        self.specs = {s.name: s for s in specs}
        self.protocols = {}
        for s in specs:
            try:
                self.protocols[s.name] = protocol.updated(s.measurement)
            except (TypeError, ValueError) as e:
                raise ValueError(f"device {s.name!r}: bad measurement settings {s.measurement}: {e}") from e
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
                self._devices[spec.name] = _Device(spec, self.protocols[spec.name], self._spawn(spec))
            return self._await_starts()
        except BaseException:
            self.close()
            raise

    def submit(self, device: str, artifact: ModelArtifact) -> None:
        """Queue a measurement; returns at once. poll() sends queued work out and returns results."""
        if device not in self.specs:
            raise ValueError(f"unknown device {device!r}; this pool has: {', '.join(self.specs)}")
        if device not in self._devices:
            raise RuntimeError("the DevicePool is not running: call start() before submit()")
        d = self._devices[device]
        if d.broken:
            self._results.append(MeasurementResult(device, artifact.structure_key, None,
                                                   MeasurementError("device", d.broken)))
            return
        key = (artifact.structure_key, artifact.sha256)
        if key not in self._stored:
            self._stored[key] = ray.put(artifact)
        d.queue.append(_Item(artifact.structure_key, self._stored[key]))

    def poll(self, timeout: float = 0.0) -> list[MeasurementResult]:
        """Results finished so far, waiting up to `timeout` seconds for at least one."""
        end = time.monotonic() + timeout
        while True:
            self._collect(min(end, self._next_deadline()) - time.monotonic())
            self._expire_overdue()
            for d in self._devices.values():
                self._dispatch(d)
            if self._results or time.monotonic() >= end or not self.pending():
                results, self._results = self._results, []
                return results

    def pending(self) -> int:
        """Measurements submitted whose results poll() has not returned yet."""
        waiting = sum(len(d.queue) + sum(len(c.items) for c in d.calls) for d in self._devices.values())
        return waiting + len(self._results)

    def broken(self) -> dict[str, str]:
        """Devices given up on, with why; the pool sends them no more work."""
        return {name: d.broken for name, d in self._devices.items() if d.broken}

    def close(self) -> None:
        """Close idle agents, kill every actor (queued work is dropped), and stop Ray if this pool started it."""
        idle = [d.actor.close.remote() for d in self._devices.values() if not d.calls and not d.broken]
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
        return _AgentHost.options(resources=dict(spec.ray_resources), num_gpus=_gpus(spec.kind)).remote()

    def _await_starts(self) -> dict[str, dict]:
        starts = {}
        for d in self._devices.values():
            self._push(d, _Call(d.actor.start.remote(d.spec), []))
            starts[d.calls[0].ref] = d
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
            d.calls.popleft()
            infos[d.spec.name] = info
        return infos

    def _unscheduled_message(self, spec: DeviceSpec) -> str:
        available = ray.cluster_resources()
        wanted = dict(spec.ray_resources)
        if _gpus(spec.kind):
            wanted["GPU"] = _gpus(spec.kind)
        missing = {k: v for k, v in wanted.items() if available.get(k, 0) < v}
        if missing:
            return (
                f"device {spec.name!r} could not be scheduled within {self.start_timeout_s:g} s: no Ray node offers "
                f"resources {missing}; start a node with those resources (ray start --resources="
                f"'{json.dumps(missing)}', or --num-gpus for a GPU) or remove the device"
            )
        return (
            f"device {spec.name!r} did not start within {self.start_timeout_s:g} s: its agent's prepare() has not "
            f"finished; check the device (`hilas devices check {spec.name}`), and that this machine is not overloaded"
        )

    # -- running ------------------------------------------------------------------

    def _push(self, d: _Device, call: _Call) -> None:
        """Append a call to the device's calls; the head's clock starts when it becomes the head."""
        if not d.calls:
            call.started = time.monotonic()
        d.calls.append(call)

    def _dispatch(self, d: _Device) -> None:
        """Send queued artifacts in batches until the device has BATCHES_IN_FLIGHT calls."""
        while d.queue and len(d.calls) < BATCHES_IN_FLIGHT and not d.broken:
            if d.queue[0].strikes:
                batch = [d.queue.popleft()]
            else:
                batch = []
                while d.queue and not d.queue[0].strikes and len(batch) < d.protocol.drift_check_every:
                    batch.append(d.queue.popleft())
            ref = d.actor.measure_batch.remote(d.protocol, *[item.artifact for item in batch])
            self._push(d, _Call(ref, batch))

    def _collect(self, wait_s: float) -> None:
        """Wait up to wait_s for any call to finish, then take every finished one."""
        refs = [call.ref for d in self._devices.values() for call in d.calls]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=max(wait_s, 0.0))
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        for d in self._devices.values():
            while d.calls and d.calls[0].ref in done:  # an actor finishes its calls in order
                if not self._finish_head(d):
                    break
        live = {item.artifact for d in self._devices.values()
                for item in [*d.queue, *(i for c in d.calls for i in c.items)]}
        self._stored = {key: ref for key, ref in self._stored.items() if ref in live}

    def _finish_head(self, d: _Device) -> bool:
        """Take the result of the device's first call; False if the device was restarted or given up on."""
        call = d.calls[0]
        try:
            value = ray.get(call.ref)
        except RayActorError as e:
            self._fail_head(d, "device", f"its process died ({_first_line(e)})")
            return False
        except RayError as e:
            error = MeasurementError("device", f"Ray could not run the measurement: {_first_line(e)}")
            value = [error] * len(call.items) if call.items else str(error)
        d.calls.popleft()
        if d.calls:
            d.calls[0].started = time.monotonic()
        if not call.items:  # a restarted agent's start
            if isinstance(value, str):
                self._give_up(d, f"device {d.spec.name!r} could not restart: {value}")
            return True
        unmeasured, lost = [], None
        for item, result in zip(call.items, value):
            if isinstance(result, DeviceUnavailable):
                unmeasured.append(item)
                lost = result
            elif isinstance(result, MeasurementError):
                self._report(d, item, error=result)
            else:
                self._report(d, item, latency=result)
        if lost is not None:  # the agent cannot reach its device any more: no more work goes to it
            d.queue.extendleft(reversed(unmeasured))
            self._give_up(d, f"device {d.spec.name!r} is unhealthy and gets no more work: {lost}")
            return False
        return True

    def _expire_overdue(self) -> None:
        now = time.monotonic()
        for d in self._devices.values():
            if d.calls and now >= self._deadline(d.calls[0]):
                call = d.calls[0]
                if not call.items:
                    self._fail_head(d, "device", f"its agent did not restart within {self.start_timeout_s:g} s")
                else:
                    self._fail_head(d, "timeout", f"the batch did not finish within {self._allowance(call):g} s")

    def _allowance(self, call: _Call) -> float:
        if not call.items:
            return self.start_timeout_s
        return self.measure_timeout_s * (2 * len(call.items) + 3)

    def _deadline(self, call: _Call) -> float:
        return call.started + self._allowance(call)

    def _next_deadline(self) -> float:
        return min((self._deadline(d.calls[0]) for d in self._devices.values() if d.calls), default=float("inf"))

    def _fail_head(self, d: _Device, failure: str, reason: str) -> None:
        """The head call died or overran: blame a model measured alone, else retry each alone; restart.

        A model is blamed when it overran alone, or when it died alone after a batch holding it died
        too: then the model, not the device, probably crashes the runtime.
        """
        head = d.calls.popleft()
        if len(head.items) == 1 and (failure == "timeout" or head.items[0].strikes):
            item = head.items[0]
            if failure == "timeout":
                why = (f"{item.structure_key} did not finish on device {d.spec.name!r} within "
                       f"{self._allowance(head):g} s (its stuck agent was stopped); if the model is just slow, "
                       f"raise measure_timeout_s")
            else:
                why = f"device {d.spec.name!r} died twice while measuring this model; it likely crashes the runtime"
            self._report(d, item, error=MeasurementError(failure, why))
            head.items = []
        for item in head.items:
            item.strikes += 1
        self._restart(d, reason, head.items)

    def _restart(self, d: _Device, reason: str, first: list[_Item]) -> None:
        """Replace the device's actor, queueing `first` and every call's artifacts again; or give up."""
        ray.kill(d.actor, no_restart=True)
        requeue = first + [item for call in d.calls for item in call.items]
        d.calls.clear()
        d.queue.extendleft(reversed(requeue))
        if d.restarts >= self.max_restarts:
            allowed = f"its {self.max_restarts} allowed restarts are used up"
            self._give_up(d, f"device {d.spec.name!r} is unavailable: {reason}, and {allowed}")
            return
        d.restarts += 1
        d.actor = self._spawn(d.spec)
        self._push(d, _Call(d.actor.start.remote(d.spec), []))
        self._dispatch(d)

    def _give_up(self, d: _Device, why: str) -> None:
        """Mark the device broken and fail its queued work; later submissions fail at once."""
        ray.kill(d.actor, no_restart=True)
        d.broken = why
        for item in [*(i for call in d.calls for i in call.items), *d.queue]:
            self._report(d, item, error=MeasurementError("device", why))
        d.calls.clear()
        d.queue.clear()

    def _report(self, d: _Device, item: _Item, *, latency: Latency | None = None,
                error: MeasurementError | None = None) -> None:
        self._results.append(MeasurementResult(d.spec.name, item.structure_key, latency, error))


def _gpus(kind: str) -> float:
    """GPUs the kind's actor needs (its class's ray_num_gpus). Ray hides GPUs from actors that ask for none.

    A kind that cannot be loaded needs none here: its actor's start reports why it cannot load.
    """
    try:
        return getattr(agent_class(kind), "ray_num_gpus", 0)
    except ValueError:
        return 0


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
