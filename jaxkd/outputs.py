"""Writing a run's result files: all or nothing, and only over files jaxkd wrote itself.

Layout. A run's result files (``config.json``, ``records.csv``,
``summary.json``, ``env.json``, figures, ...) sit at the top of ``--out``
(``results/<experiment>/summary.json``), beside what else may live there:
jaxkd's checkpoints (``checkpoints/``, see :mod:`jaxkd.checkpoint`), saved
teachers, and anything the user put there. ``.jaxkd-manifest.json`` lists
the result files jaxkd wrote with the SHA-256 of each. A file is replaced
only when the manifest lists it with its present content; any other file in
the way (one the user wrote, or changed since) is refused with one line, and
nothing else in ``--out`` is touched.

Swap. A write first puts every new file, then the new manifest, into
``<out>/.jaxkd-staging-<pid>-<random>/`` (a staging directory without a
manifest is incomplete). Then, with renames inside ``<out>``'s file system:

1. the old manifest, then each old result file, is moved aside into
   ``<out>/.jaxkd-old-<same suffix>/``;
2. each new file is moved from staging into ``<out>``, the new manifest last;
3. the two hidden directories are removed.

So ``<out>`` holds a manifest exactly when it holds a complete set: the old
one before step 1, the new one after step 2. A failure inside the swap that
Python sees (an error, Ctrl-C, or SIGTERM, which ``jaxkd`` raises as
Ctrl-C) undoes it: new files back to staging, old files back in place, the
old manifest last; ``<out>`` is left with the old complete set. A writer
killed outright mid-swap (SIGKILL) cannot undo anything: it leaves ``<out>``
without a manifest and both hidden directories behind, and :func:`recover`,
run before every later write and by ``jaxkd report`` before it reads,
completes that swap from the staged set, so what is read is the new complete
set. A single directory rename could not do this: ``<out>`` itself also
holds checkpoints and the user's files, which jaxkd may not move.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

MANIFEST = ".jaxkd-manifest.json"
STAGING_PREFIX = ".jaxkd-staging-"
ASIDE_PREFIX = ".jaxkd-old-"
# The files every experiment writes: checked before any training (the rest when the run writes them).
RESULT_NAMES = ("config.json", "records.csv", "summary.json", "env.json", "figure.png")


def check_writable(out_dir: str) -> None:
    """Fail early (ConfigError) unless ``out_dir`` can be created and written.

    Probes by creating the directory and a temporary file in it; existing
    files are left untouched.
    """
    from jaxkd.errors import ConfigError

    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"output path {out_dir} exists and is not a directory; choose another --out")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"output directory {out_dir} is not writable ({err.strerror}); choose another --out"
        ) from None


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (renames, new files) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: str) -> dict[str, str]:
    """``{file name: sha256}`` of the result files jaxkd wrote into ``directory`` ({} when none)."""
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            files = json.load(f).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def _owned(out_dir: str, name: str, manifest: dict[str, str]) -> bool:
    path = os.path.join(out_dir, name)
    return name in manifest and os.path.isfile(path) and not os.path.islink(path) and _sha256(path) == manifest[name]


def check_replaceable(out_dir: str, names=RESULT_NAMES) -> None:
    """One ConfigError line if writing ``names`` into ``out_dir`` would replace a file jaxkd did not write.

    A file may be replaced only when ``.jaxkd-manifest.json`` lists it with
    its present SHA-256; a missing file is fine.
    """
    from jaxkd.errors import ConfigError

    out_dir = os.path.abspath(out_dir)
    manifest = read_manifest(out_dir)
    for name in names:
        path = os.path.join(out_dir, name)
        if not os.path.lexists(path) or _owned(out_dir, name, manifest):
            continue
        why = (
            "has changed since jaxkd wrote it"
            if name in manifest
            else f"was not written by jaxkd (it is not listed in {MANIFEST})"
        )
        raise ConfigError(
            f"{path} {why}, so jaxkd will not replace it; move it out of {out_dir} or choose another --out"
        )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process cleans up its own writes; a leftover of ours is abandoned
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _writer_pid(entry: str) -> int | None:
    try:
        return int(entry[len(STAGING_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return None


def recover(out_dir: str) -> None:
    """Finish or clear what a killed writer left in ``out_dir`` (see the module docstring).

    Only staging directories of writers that no longer run are touched: an
    incomplete one (no manifest) is removed, and so is a complete one whose
    swap never began or had finished; a complete one whose swap was cut off
    (``out_dir`` has no manifest) is moved into place.
    """
    out_dir = os.path.abspath(out_dir)
    if not os.path.isdir(out_dir):
        return
    for entry in sorted(os.listdir(out_dir)):
        pid = _writer_pid(entry) if entry.startswith(STAGING_PREFIX) else None
        if pid is None or _alive(pid):
            continue
        staging = os.path.join(out_dir, entry)
        aside = os.path.join(out_dir, ASIDE_PREFIX + entry[len(STAGING_PREFIX) :])
        if os.path.isfile(os.path.join(staging, MANIFEST)) and not os.path.exists(os.path.join(out_dir, MANIFEST)):
            _roll_forward(out_dir, staging, aside)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)


def _roll_forward(out_dir: str, staging: str, aside: str) -> None:
    """Complete a cut-off swap: the staged files and manifest into place, the old set's leftovers aside."""
    new, old = read_manifest(staging), read_manifest(aside)
    os.makedirs(aside, exist_ok=True)
    for name in old:
        if name not in new and _owned(out_dir, name, old):
            os.replace(os.path.join(out_dir, name), os.path.join(aside, name))
    for name in new:
        if os.path.exists(os.path.join(staging, name)):
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    os.replace(os.path.join(staging, MANIFEST), os.path.join(out_dir, MANIFEST))


def _swap(out_dir: str, staging: str, aside: str, new: dict[str, str]) -> None:
    """Move the complete set in ``staging`` into ``out_dir``; on any exception restore the old set, then re-raise."""
    old = read_manifest(out_dir)
    moved_aside, moved_in = [], []
    try:
        os.mkdir(aside)
        if os.path.exists(os.path.join(out_dir, MANIFEST)):
            os.replace(os.path.join(out_dir, MANIFEST), os.path.join(aside, MANIFEST))
            moved_aside.append(MANIFEST)
        for name in old:
            if _owned(out_dir, name, old):  # a file changed since it was written is no longer jaxkd's
                os.replace(os.path.join(out_dir, name), os.path.join(aside, name))
                moved_aside.append(name)
        for name in new:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
            moved_in.append(name)
        os.replace(os.path.join(staging, MANIFEST), os.path.join(out_dir, MANIFEST))
    except BaseException:
        if not os.path.exists(os.path.join(staging, MANIFEST)):
            raise  # interrupted after the new manifest was in place: the new set is complete
        for name in reversed(moved_in):
            os.replace(os.path.join(out_dir, name), os.path.join(staging, name))
        for name in reversed(moved_aside):  # the old manifest was moved first, so it returns last
            os.replace(os.path.join(aside, name), os.path.join(out_dir, name))
        os.remove(os.path.join(staging, MANIFEST))  # undone: the staged set is abandoned, never rolled forward
        raise


def write_files(out_dir: str, files: dict[str, str | bytes]) -> None:
    """Write ``{file name: content}`` into ``out_dir`` as one set, replacing the previous set jaxkd wrote there.

    Refuses (ConfigError) to replace any file jaxkd did not write; see the
    module docstring for how an interrupted write leaves either the old
    complete set or the new one.
    """
    from jaxkd import __version__
    from jaxkd.distributed import barrier, is_primary

    for name in files:
        if not name or os.path.basename(name) != name or name.startswith(".jaxkd-"):
            raise ValueError(f"result file names are plain names in the output directory, got {name!r}")
    if not is_primary():  # a multi-process run's results are the same on every process: process 0 writes them
        barrier("jaxkd-results-written")
        return
    try:
        _write_files(out_dir, files, __version__)
    finally:
        barrier("jaxkd-results-written")


def _write_files(out_dir: str, files: dict, __version__: str) -> None:
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    recover(out_dir)
    check_replaceable(out_dir, files)
    staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir)
    aside = os.path.join(out_dir, ASIDE_PREFIX + os.path.basename(staging)[len(STAGING_PREFIX) :])
    try:
        hashes = {}
        for name, content in files.items():
            path = os.path.join(staging, name)
            with open(path, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
                f.flush()
                os.fsync(f.fileno())  # on disk before the manifest that vouches for it
            hashes[name] = _sha256(path)
        manifest = {"written_by": f"jaxkd {__version__}", "files": hashes}
        with open(os.path.join(staging, MANIFEST + ".tmp"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f.name, os.path.join(staging, MANIFEST))  # last, whole: it marks the staged set complete
        fsync_dir(staging)
        _swap(out_dir, staging, aside, hashes)
        fsync_dir(out_dir)  # the renames into place
    finally:
        # Kept only when a second interruption cut the undo short (no complete set in place): recover() then
        # completes the swap from the staged set.
        if os.path.exists(os.path.join(out_dir, MANIFEST)) or not os.path.exists(os.path.join(staging, MANIFEST)):
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)


def write_outputs(out_dir: str, *, config, rows, summary, figures: dict[str, bytes], extra: dict | None = None):
    """Write config.json, records.csv, summary.json, env.json and figures, all-or-nothing."""
    from jaxkd import results
    from jaxkd.plugins import provenance

    as_dict = config if isinstance(config, dict) else dataclasses.asdict(config)
    files = {  # config.json: the user's plugins and registrations too, where there are any
        "config.json": results.to_json({**as_dict, **provenance()}),
        "records.csv": results.records_csv(rows),
        "summary.json": results.to_json(summary),
        "env.json": results.to_json(results.env_stamp()),
        **figures,
    }
    for name, content in (extra or {}).items():
        files[name] = content
    write_files(out_dir, files)
    return {name: os.path.join(os.path.abspath(out_dir), name) for name in files}
