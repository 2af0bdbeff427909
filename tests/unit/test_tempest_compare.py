"""Reading Tempest's results and the no-regression rule of tools/tempest."""

from __future__ import annotations

import pathlib

import subunit

from tests.local import tempest


def _stream(path: pathlib.Path, results: dict[str, str]) -> str:
    """A subunit v2 stream as ``tempest run --subunit`` writes it."""
    with open(path, 'wb') as out:
        writer = subunit.StreamResultToBytes(out)
        for test_id, status in results.items():
            writer.status(test_id=test_id, test_status='inprogress')
            writer.status(test_id=test_id, test_status=status)
    return str(path)


def test_subunit_outcome_strips_tags_and_sorts_by_ending(
        tmp_path: pathlib.Path) -> None:
    path = _stream(tmp_path / 'run.subunit', {
        'tempest.a.Test.test_ok[id-1,smoke]': 'success',
        'tempest.a.Test.test_skip[id-2]': 'skip',
        'tempest.a.Test.test_bad[id-3]': 'fail',
        'tempest.a.Test.test_expected[id-4]': 'xfail',
        'setUpClass (tempest.a.Broken)': 'fail',
    })
    outcome = tempest.parse_subunit(path)
    assert outcome.passed == {'tempest.a.Test.test_ok',
                              'tempest.a.Test.test_expected'}
    assert outcome.skipped == {'tempest.a.Test.test_skip'}
    assert outcome.failed == {'tempest.a.Test.test_bad',
                              'setUpClass (tempest.a.Broken)'}
    assert outcome.counts() == '2 passed, 2 failed, 1 skipped'


def test_a_test_passing_bare_and_not_with_the_stack_is_a_regression() -> None:
    bare = tempest.Outcome(passed={'t.a', 't.b', 't.c'}, failed={'t.d'})
    stack = tempest.Outcome(passed={'t.a', 't.d'}, failed={'t.b'},
                            skipped=set())
    comparison = tempest.Comparison(bare, stack)
    # t.c did not run with the stack at all: that counts too.
    assert comparison.regressions == ['t.b', 't.c']
    report = comparison.report()
    assert 'pass bare, not with the stack:\n  t.b\n  t.c' in report
    assert 'failed on bare:\n  t.d' in report


def test_no_regression_is_said_plainly() -> None:
    same = tempest.Outcome(passed={'t.a'}, skipped={'t.s'})
    comparison = tempest.Comparison(same, same)
    assert comparison.regressions == []
    assert comparison.report().splitlines() == [
        'bare Glance: 1 passed, 0 failed, 1 skipped',
        'with the stack: 1 passed, 0 failed, 1 skipped',
        'no test that passes bare fails with the stack']


def test_stack_location_rules_are_glances_defaults() -> None:
    """Every location rule of the stack is set, to Glance 33's default
    check for the same decision."""
    from glance.policies import image as glance_image

    from instance_aware.policies import locations

    assert set(tempest.GLANCE_LOCATION_RULES) == {
        rule.name for rule in locations.list_rules()}
    glance_rules = {rule.name: rule.check_str
                    for rule in glance_image.list_rules()}
    assert glance_rules['get_image_location'] == (
        'rule:context_is_admin or (role:reader and '
        'project_id:%(project_id)s)')
    assert glance_rules['set_image_location'] == (
        'rule:context_is_admin or (role:member and '
        'project_id:%(project_id)s)')
    assert glance_rules['delete_image_location'] == 'rule:context_is_admin'
    assert glance_rules['add_image_location'] == (
        'rule:service_api or (role:member and project_id:%(project_id)s '
        'and project_id:%(owner)s)')
    assert glance_rules['fetch_image_location'] == 'rule:service_api'
