"""The suite's own scheduling: ``make test`` runs ``--dist loadgroup`` so that tests sharing an expensive session
fixture (the subdistill smoke run, the GPU check's dry run, the multi-process runs) run on one worker.

pytest 9.2 with pytest-xdist 3.8 silently dropped the groups (pytest-dev/pytest-xdist#1386): every shared fixture then
ran once per worker, about two minutes of the suite. This fails when the grouping does not reach the scheduler.
"""

import pytest

pytestmark = pytest.mark.xdist_group("test_groups")


def test_loadgroup_tags_the_grouped_tests(request):
    if not request.config.getoption("loadgroup", False):
        pytest.skip("not a pytest-xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@test_groups"), (
        f"{request.node.nodeid}: xdist_group marks are ignored by this pytest/pytest-xdist pair (see pyproject's dev)"
    )
