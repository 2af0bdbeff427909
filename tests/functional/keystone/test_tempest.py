"""Tempest's image tests: nothing that passes on bare Glance fails with
the stack (the CI subset; ``tools/tempest`` runs the whole selection).

Keystone, a bare Glance and a Glance with the stack (location rules set
to Glance's own) are started for this test alone; Tempest runs the
subset against each with dynamic credentials.
"""

from __future__ import annotations

import pytest

from tests.local import keystone, tempest

pytestmark = pytest.mark.functional


@pytest.mark.timeout(1200)
def test_no_tempest_test_passing_bare_fails_with_the_stack(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    if not keystone.available():
        pytest.skip('keystone is not installed')
    comparison = tempest.compare(str(tmp_path_factory.mktemp('tempest')),
                                 tempest.SUBSET)
    report = comparison.report()
    # The subset really ran: images, members, tags, import, locations.
    assert len(comparison.bare.passed) >= 20, report
    for covered in ('test_images.BasicOperationsImagesTest',
                    'test_images_member.', 'test_images_tags.',
                    'test_images.ImportImagesTest',
                    'test_images.ImageLocationsTest'):
        assert any(covered in test for test in comparison.stack.passed), (
            f'no {covered} test passed with the stack\n{report}')
    assert comparison.regressions == [], report
