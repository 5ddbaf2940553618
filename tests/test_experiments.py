"""A 1–2 step smoke run of every preset of every registered experiment.

Presets that shrink to the same smoke configuration (``runlocal``) run once;
every preset's full configuration is still built and validated.
"""

import dataclasses
import json

import pytest

import experiments


def _cases():
    for name in experiments.EXPERIMENTS:
        mod, seen = experiments.get(name), set()
        for preset, config in mod.PRESETS.items():
            local = repr(mod.runlocal(config))
            if local not in seen:
                seen.add(local)
                yield name, preset


@pytest.mark.parametrize("name,preset", list(_cases()))
def test_preset_smoke(name, preset, tmp_path):
    mod = experiments.get(name)
    config = mod.runlocal(mod.PRESETS[preset])
    assert dataclasses.asdict(config)  # presets are dataclasses
    mod.run(config, str(tmp_path), progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary
    assert (tmp_path / "records.csv").stat().st_size > 0
