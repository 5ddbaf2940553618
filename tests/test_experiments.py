"""A 1–2 step smoke run of every preset of every registered experiment.

Presets that shrink to the same smoke configuration (``runlocal``) run once, and not at all here when an
experiment's own test file runs that configuration and checks its outputs (``CONTENT_TESTED``); every
preset's full configuration is still built and validated.
"""

import dataclasses
import json

import pytest

import experiments

# Experiments whose shrunk preset (named here) already runs, with its outputs' content checked, in its own
# test file: the same configuration is not trained twice.
CONTENT_TESTED = {
    "functional_kd": "default",
    "interaction_tensor": "paper",
    "backdoor_kd": "default",
    "kd_scaling": "default",
}


def _cases():
    for name in experiments.EXPERIMENTS:
        mod, seen = experiments.get(name), set()
        if name in CONTENT_TESTED:
            seen.add(repr(mod.runlocal(mod.PRESETS[CONTENT_TESTED[name]])))
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
