"""Training curves: every sweep's history as TensorBoard event files (and offline W&B runs), written on the host.

Inside ``with logging_to(["tensorboard"], out):`` every :func:`jaxkd.sweep.run_sweep`
writes one TensorBoard run per seed × grid point under
``<out>/tensorboard/<desc>/<condition>/seed<s>/`` (``<desc>/seed<s>`` for a sweep
of one unnamed point): every metric of the history (``train/*``, ``val/*``,
``test/*``) at each evaluation step, and the grid point's hyper-parameters with
``seed``, ``condition`` and ``sweep`` in TensorBoard's HParams view. The curves
are written at chunk boundaries from the history the compiled program returns,
never inside it; outside the context manager nothing is written and
``tensorboardX`` is never imported. Runs are per seed, never averaged.

Files are written with ``tensorboardX``'s record writer (no TensorFlow); the
reader :func:`read_scalars` parses the record framing itself and checks its
masked CRC32C, so a test that reads the curves back does not trust the writer.

Directory ownership: ``<out>/tensorboard`` (and ``<out>/wandb``) carry a marker
file; a fresh run replaces a marked folder and refuses an unmarked one before
any training; ``resume=True`` keeps it and each run appends the evaluations after
its resumed step in a new event file. Every event file starts with a
``SessionLog.START`` at its first step; TensorBoard (and :func:`read_scalars`)
take each one after a run's first as a restart and drop the later steps an
interrupted attempt had written.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import re
import shutil
import socket
import struct
import time

import numpy as np

from jaxkd.errors import ConfigError, check

LOG_KINDS = ("tensorboard", "wandb")
MARKER = ".jaxkd-curves"
WANDB_MIN_VERSION = (0, 19, 10)  # reinit="create_new": several runs open in one process
HPARAMS_START_TAG = "_hparams_/session_start_info"

_ACTIVE: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("jaxkd_curves", default=None)


def check_kinds(kinds) -> tuple[str, ...]:
    """The requested writers, in order without repeats; one-line error for an unknown or uninstalled one."""
    out = tuple(dict.fromkeys(kinds or ()))
    for kind in out:
        if kind not in LOG_KINDS:
            raise ConfigError(f"unknown --log kind {kind!r}; choose one of: {', '.join(LOG_KINDS)}")
    if "tensorboard" in out:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ConfigError("--log tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from None
    if "wandb" in out:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--log wandb needs the wandb package: pip install wandb") from None
        have = tuple(int(x) for x in re.findall(r"\d+", getattr(wandb, "__version__", "0"))[:3])
        check(
            have >= WANDB_MIN_VERSION,
            f"--log wandb needs wandb >= {'.'.join(map(str, WANDB_MIN_VERSION))} (several runs open at once), "
            f"found {wandb.__version__}: pip install -U wandb",
        )
    return out


@contextlib.contextmanager
def logging_to(kinds, out_dir: str, *, resume: bool = False):
    """Log every :func:`jaxkd.sweep.run_sweep` inside the block to ``<out_dir>/<kind>/``.

    Refuses (one line, before any training) a ``<out_dir>/<kind>`` folder that
    jaxkd did not create. A marked folder is replaced on a fresh run (when the
    first sweep starts writing) and kept with ``resume=True``.
    """
    kinds = check_kinds(kinds)
    roots = {kind: os.path.join(os.fspath(out_dir), kind) for kind in kinds}
    for root in roots.values():
        _check_owned(root)
    token = _ACTIVE.set(_Session(roots, bool(resume)) if kinds else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def suspended():
    """No curves inside (a sweep run in seed blocks writes the whole sweep's curves once at the end)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def open_sweep(desc: str, names, grid: dict, n_seeds: int, every: int, done: int, total: int):
    """The curve writers of one sweep (``None`` outside :func:`logging_to` or with nothing left to train).

    Called by :func:`jaxkd.sweep.run_sweep` after resuming (``done`` steps
    restored) and before the first chunk.
    """
    session = _ACTIVE.get()
    if session is None or done >= total:
        return None
    return session.open_sweep(desc, names, grid, int(n_seeds), int(every), int(done))


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of one TensorBoard run, as TensorBoard shows it.

    Reads every ``events.out.tfevents.*`` file directly in ``run_dir`` in name
    order, checks each record's length and data CRC, and applies TensorBoard's
    restart rule: every ``SessionLog.START`` after the run's first, at step
    ``p``, drops the values at steps ``>= p`` read so far.
    """
    out: dict[str, list[tuple[int, float]]] = {}
    started = False
    for event in read_events(run_dir):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            if started:
                out = {tag: [(s, v) for s, v in pts if s < event.step] for tag, pts in out.items()}
            started = True
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out


def read_hparams(run_dir: str) -> dict[str, float | str | bool]:
    """The hyper-parameters of one run as TensorBoard's HParams view reads them (its session start info)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    out = {}
    for event in read_events(run_dir):
        for value in event.summary.value:
            if value.tag == HPARAMS_START_TAG and value.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                out = {k: getattr(v, v.WhichOneof("kind")) for k, v in data.session_start_info.hparams.items()}
    return out


def event_files(run_dir: str) -> list[str]:
    """The event files directly in ``run_dir``, in the order TensorBoard reads them."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(os.path.join(run_dir, f) for f in os.listdir(run_dir) if f.startswith("events.out.tfevents."))


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C (Castagnoli): rotate right by 15 and add ``0xa282ead8``."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # the reflected Castagnoli polynomial
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def read_events(run_dir: str):
    """Every ``Event`` proto of the run's event files, in order, as written (no restart rule applied).

    Parses the TFRecord framing (uint64 length, its masked CRC32C, data, the
    data's masked CRC32C) and raises ``ValueError`` on a bad CRC or a cut record.
    """
    from tensorboardX.proto.event_pb2 import Event

    for path in event_files(run_dir):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            if len(data) - pos < 12:
                raise ValueError(f"{path}: truncated record header at byte {pos}")
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            if header_crc != masked_crc32c(header):
                raise ValueError(f"{path}: bad length CRC at byte {pos}")
            body = data[pos + 12 : pos + 12 + length]
            if len(body) != length or len(data) < pos + 16 + length:
                raise ValueError(f"{path}: truncated record at byte {pos}")
            (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
            if body_crc != masked_crc32c(body):
                raise ValueError(f"{path}: bad data CRC at byte {pos}")
            yield Event.FromString(body)
            pos += 16 + length


def _check_owned(root: str) -> None:
    if os.path.lexists(root) and not os.path.isfile(os.path.join(root, MARKER)):
        raise ConfigError(
            f"{root} exists and was not written by jaxkd (no {MARKER} in it); move it away or choose another "
            "output directory"
        )


def _claim(root: str, resume: bool) -> None:
    """Make ``root`` ours: a marked folder is kept on resume and replaced otherwise."""
    _check_owned(root)  # again: the folder may have changed since the block was entered
    if os.path.isdir(root) and not resume:
        shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, MARKER), "w") as f:
        f.write("written by jaxkd --log; replaced by a fresh run, kept by --resume\n")


def _check_open_files(n_runs: int) -> None:
    """One line, before training, when one open event file per run would exceed the process's limit."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(
        soft == resource.RLIM_INFINITY or n_runs + 256 <= soft,
        f"--log tensorboard keeps one event file open per run: {n_runs} runs exceed this process's limit of {soft} "
        f"open files; raise it (ulimit -n {n_runs + 256}) and run again",
    )


def _safe(name: str) -> str:
    """A path component: runs of characters other than letters, digits and ``._=+-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(name)).strip("._") or "run"


def _unique(name: str, taken: dict) -> str:
    n = taken.get(name, 0) + 1
    taken[name] = n
    return name if n == 1 else f"{name}-{n}"


@dataclasses.dataclass
class _Run:
    """One seed at one grid point: where it is written and what it is."""

    seed: int
    point: int
    path: str  # relative to each writer's root
    name: str  # ``<desc>/<condition>/seed<s>``
    hparams: dict


@dataclasses.dataclass
class _Session:
    roots: dict  # kind -> folder
    resume: bool
    descs: dict = dataclasses.field(default_factory=dict)
    claimed: bool = False

    def open_sweep(self, desc, names, grid, n_seeds, every, done):
        if not self.claimed:
            for root in self.roots.values():
                _claim(root, self.resume)
            self.claimed = True
        desc = _unique(_safe(desc), self.descs)
        g_size = len(next(iter(grid.values()))) if grid else 1
        if names is None:
            conditions = [None] if g_size == 1 else [f"point{g}" for g in range(g_size)]
        else:
            taken = {}
            conditions = [_unique(_safe(n), taken) for n in names]
        runs = []
        for g, cond in enumerate(conditions):
            point = {k: float(np.asarray(v)[g]) for k, v in grid.items()}
            for s in range(n_seeds):
                parts = [desc] + ([cond] if cond is not None else []) + [f"seed{s}"]
                hp = {**point, "seed": s, "sweep": desc, "condition": cond if cond is not None else desc}
                runs.append(_Run(s, g, os.path.join(*parts), "/".join(parts), hp))
        sinks = []
        try:
            for kind, root in self.roots.items():
                sinks.append((_TensorBoardSink if kind == "tensorboard" else _WandbSink)(root, desc, runs, done))
        except BaseException:
            for sink in sinks:
                sink.close(ok=False)
            raise
        return SweepCurves(runs, sinks, every, done)


class SweepCurves:
    """The open writers of one sweep; :func:`jaxkd.sweep.run_sweep` feeds it each chunk's history."""

    def __init__(self, runs, sinks, every, done):
        self.runs, self.sinks, self.every, self.done = runs, sinks, every, done

    def write_chunk(self, chunk_hist: dict) -> None:
        """Write one chunk's evaluations (``{metric: [S_padded, G, E]}``) at their training steps, then flush."""
        n_evals = next(iter(chunk_hist.values())).shape[-1]
        steps = self.done + self.every * np.arange(1, n_evals + 1)
        for run in self.runs:
            series = {k: v[run.seed, run.point] for k, v in chunk_hist.items()}
            for e, step in enumerate(steps):
                values = {k: float(v[e]) for k, v in series.items()}
                for sink in self.sinks:
                    sink.write(run, int(step), values)
        for sink in self.sinks:
            sink.flush()
        self.done = int(steps[-1])

    def close(self, ok: bool) -> None:
        """Close every writer; ``ok``: the sweep finished (TensorBoard marks each session successful)."""
        errors = []
        for sink in self.sinks:
            try:
                sink.close(ok)
            except Exception as e:  # close the others first
                errors.append(e)
        if errors:
            raise errors[0]


class _TensorBoardSink:
    """One event file per run, written synchronously with tensorboardX's record writer.

    (``tensorboardX.SummaryWriter`` queues events to a thread per run and its
    ``flush`` does not drain that queue, so a chunk boundary would not be a
    point where the curves are on disk.)
    """

    def __init__(self, root, desc, runs, done):
        from tensorboardX import RecordWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import hparams

        _check_open_files(len(runs))
        self._Event = Event
        self._end_info = hparams({}, {})[2]  # the session end info: status success
        self.writers = {}
        host = socket.gethostname()
        try:
            for run in runs:
                run_dir = os.path.join(root, run.path)
                os.makedirs(run_dir, exist_ok=True)
                earlier = event_files(run_dir)
                stamp = f"{int(time.time()):010d}"
                path = os.path.join(run_dir, f"events.out.tfevents.{stamp}.{host}.{len(earlier):04d}")
                w = self.writers[run.name] = RecordWriter(path)
                self._event(w, Event(wall_time=time.time(), file_version="brain.Event:2"))
                # Every file starts a session; TensorBoard takes each START after a run's first as a restart
                # and drops the steps >= its step read so far: what an interrupted attempt wrote after `done`.
                start = SessionLog(status=SessionLog.START)
                self._event(w, Event(wall_time=time.time(), step=done + 1, session_log=start))
                if not earlier:
                    self._event(w, Event(wall_time=time.time(), summary=hparams(run.hparams, {})[1]))
        except BaseException:
            self.close(ok=False)
            raise

    def _event(self, writer, event):
        writer.write(event.SerializeToString())

    def write(self, run, step, values):
        from tensorboardX.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._event(self.writers[run.name], self._Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self):
        for w in self.writers.values():
            w.flush()

    def close(self, ok):
        writers, self.writers = self.writers, {}
        for w in writers.values():
            if ok:
                self._event(w, self._Event(wall_time=time.time(), summary=self._end_info))
            w.flush()
            w.close()


class _WandbSink:
    """One offline W&B run per seed × grid point (``wandb sync <out>/wandb/wandb/offline-run-*`` uploads them).

    A resumed sweep opens new offline runs holding the evaluations after the resumed step.
    """

    def __init__(self, root, desc, runs, done):
        import wandb

        self.runs = {}
        try:
            for run in runs:
                self.runs[run.name] = wandb.init(
                    mode="offline",
                    dir=root,
                    project="jaxkd",
                    group=desc,
                    name=run.name,
                    config=run.hparams,
                    reinit="create_new",
                )
        except BaseException:
            self.close(ok=False)
            raise

    def write(self, run, step, values):
        self.runs[run.name].log(values, step=step)

    def flush(self):
        pass  # offline runs stream to their own files

    def close(self, ok):
        runs, self.runs = self.runs, {}
        for r in runs.values():
            r.finish(exit_code=0 if ok else 1)
