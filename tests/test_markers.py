"""The fast loop (``pytest -m "not e2e"``) never builds an end-to-end fixture.

A test that requests one of these fixtures, directly or through another fixture, runs the real
pipeline, DVC, a SLURM cluster or an S3 server: it must carry the ``e2e`` marker, or deselecting
the marker would still build the fixture (``tiny_reproduced`` alone is a whole ``dvc repro``).
"""

from __future__ import annotations

import pytest

# tiny_reproduced: the real `dvc repro` (tiny_repo and study_repo are copies of it); cluster: slurm/cluster.sh;
# s3_endpoint: moto's S3 server for `dvc push`/`pull`; views_repo, plots_repo: the DVC CLI in a throwaway repo.
E2E_FIXTURES = frozenset({"tiny_reproduced", "cluster", "s3_endpoint", "views_repo", "plots_repo"})


def test_no_unmarked_test_requests_an_e2e_fixture(request: pytest.FixtureRequest) -> None:
    """Checks the tests of this session (what ``-m``, ``-k`` or the paths selected), so ``make test-fast`` checks
    every test it runs."""
    wrong = {
        item.nodeid: sorted(E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        for item in request.session.items
        if item.get_closest_marker("e2e") is None
    }
    wrong = {nodeid: names for nodeid, names in wrong.items() if names}
    assert not wrong, f"mark these @pytest.mark.e2e (they request end-to-end fixtures): {wrong}"
