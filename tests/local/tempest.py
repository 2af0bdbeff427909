"""OpenStack's own image API tests, on bare Glance and with the stack.

Why this is one module: one command, from the servers it starts to the
comparison of both runs.

``tools/tempest`` (``python -m tests.local.tempest``) starts a
local Keystone 30 and two local Glance 33 servers on 127.0.0.1: one bare,
one with the stack whose location rules are Glance's own
(:data:`GLANCE_LOCATION_RULES`, what a deployer who wants Glance's
location behaviour writes in the policy file).  Both are in Keystone's
catalog (regions :data:`~tests.local.keystone.REGION` and
:data:`~tests.local.keystone.BARE_REGION`).  Tempest 47 and
glance-tempest-plugin run the same selection against each, with dynamic
credentials and concurrency 1 (SQLite); the rule checked is that no test
that passes bare fails with the stack.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tests.local import glance, keystone, server, statedir

#: OpenStack's image API tests and glance-tempest-plugin's.
FULL = r'^(tempest\.api\.image\.v2|glance_tempest_plugin\.tests)'
#: Images, members, tags, import and locations: the CI subset (the RBAC
#: tests of the plugin run in the whole selection only).
SUBSET = (r'^tempest\.api\.image\.v2\.(test_images|test_images_member'
          r'|test_images_tags|admin\.test_images)\.')

#: The stack's location rules set to Glance 33's defaults for the same
#: decisions (``glance/policies/image.py``; ``service_api`` is
#: ``role:service or role:admin``, ``context_is_admin`` ``role:admin``).
GLANCE_LOCATION_RULES = {
    'instance_aware:get_image_location':
        'role:admin or (role:reader and project_id:%(project_id)s)',
    'instance_aware:set_image_location':
        'role:admin or (role:member and project_id:%(project_id)s)',
    'instance_aware:delete_image_location': 'role:admin',
    'instance_aware:add_image_location':
        'role:service or role:admin or '
        '(role:member and project_id:%(project_id)s)',
    'instance_aware:fetch_image_location': 'role:service or role:admin',
}

_TEST_ID = re.compile(r'\[.*\]$')


@dataclasses.dataclass
class Outcome:
    """Test ids (tags stripped) by how they ended."""

    passed: set[str] = dataclasses.field(default_factory=set)
    failed: set[str] = dataclasses.field(default_factory=set)
    skipped: set[str] = dataclasses.field(default_factory=set)

    def counts(self) -> str:
        return (f'{len(self.passed)} passed, {len(self.failed)} failed, '
                f'{len(self.skipped)} skipped')


@dataclasses.dataclass
class Comparison:
    bare: Outcome
    stack: Outcome

    @property
    def regressions(self) -> list[str]:
        """Tests that pass bare and do not pass with the stack."""
        return sorted(self.bare.passed - self.stack.passed)

    def report(self) -> str:
        lines = [f'bare Glance: {self.bare.counts()}',
                 f'with the stack: {self.stack.counts()}']
        if self.regressions:
            lines.append('pass bare, not with the stack:')
            lines += [f'  {test}' for test in self.regressions]
        else:
            lines.append('no test that passes bare fails with the stack')
        for name, outcome in (('bare', self.bare), ('stack', self.stack)):
            if outcome.failed:
                lines.append(f'failed on {name}:')
                lines += [f'  {test}' for test in sorted(outcome.failed)]
        return '\n'.join(lines)


def parse_subunit(path: str) -> Outcome:
    """What a ``tempest run --subunit`` stream says about each test."""
    import subunit
    import testtools

    outcome = Outcome()

    def record(test: Mapping[str, Any]) -> None:
        test_id = _TEST_ID.sub('', str(test['id']))
        status = test['status']
        if status in ('success', 'xfail'):
            outcome.passed.add(test_id)
        elif status == 'skip':
            outcome.skipped.add(test_id)
        elif status in ('fail', 'uxsuccess'):
            outcome.failed.add(test_id)

    with open(path, 'rb') as stream:
        case = subunit.ByteStreamToStreamResult(stream,
                                                non_subunit_name='stdout')
        result = testtools.StreamToDict(record)
        result.startTestRun()
        try:
            case.run(result)
        finally:
            result.stopTestRun()
    # A test retried or reported twice counts by its worst ending.
    outcome.passed -= outcome.failed
    outcome.skipped -= outcome.failed | outcome.passed
    return outcome


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def write_tempest_conf(path: str, directory: keystone.Directory,
                       region: str, log_dir: str) -> None:
    """``tempest.conf`` for the image tests only, against ``region``."""
    admin = directory.admin
    sections = {
        'DEFAULT': {'log_dir': log_dir, 'log_file': 'tempest.log',
                    'use_stderr': 'False'},
        'auth': {'use_dynamic_credentials': 'True',
                 'create_isolated_networks': 'False',
                 'admin_username': admin.username,
                 'admin_password': admin.password,
                 'admin_project_name': admin.project,
                 'admin_domain_name': keystone.DOMAIN},
        'identity': {'uri_v3': directory.auth_url, 'auth_version': 'v3',
                     'region': keystone.REGION},
        'identity-feature-enabled': {'api_v3': 'True'},
        'service_available': {'glance': 'True', 'nova': 'False',
                              'neutron': 'False', 'cinder': 'False',
                              'swift': 'False'},
        # Tests waiting for a state Glance never reaches fail after a
        # minute instead of five.
        'image': {'region': region, 'endpoint_type': 'publicURL',
                  'build_timeout': '60'},
        # As glance.config_sections configures Glance: multiple
        # locations shown, no conversion, file store, no cache.
        # Glance 33 enforces scope and the new defaults (oslo.policy's
        # defaults): the RBAC tests of glance-tempest-plugin apply.
        'enforce_scope': {'glance': 'True'},
        'image-feature-enabled': {'api_v2': 'True', 'import_image': 'True',
                                  'os_glance_reserved': 'True',
                                  'manage_locations': 'True',
                                  'image_conversion': 'False',
                                  'do_secure_hash': 'True',
                                  'http_store_enabled': 'False'},
    }
    statedir.write_ini(path, sections)


def run_tempest(workspace: str, directory: keystone.Directory, region: str,
                regex: str, concurrency: int = 1,
                timeout: float = 3600) -> Outcome:
    """``tempest run --regex`` in a fresh workspace; its outcome."""
    shutil.rmtree(workspace, ignore_errors=True)
    os.makedirs(workspace)
    env = dict(os.environ)
    # tempest init records workspaces in ~/.tempest: keep it here.
    env['HOME'] = workspace
    env['NO_PROXY'] = env['no_proxy'] = server.HOST
    subprocess.run(
        [_bin('tempest'), 'init', os.path.join(workspace, 'cloud')],
        env=env, check=True, capture_output=True, timeout=120)
    cloud = os.path.join(workspace, 'cloud')
    write_tempest_conf(os.path.join(cloud, 'etc', 'tempest.conf'),
                       directory, region, os.path.join(cloud, 'logs'))
    stream = os.path.join(workspace, 'results.subunit')
    with open(stream, 'wb') as out:
        subprocess.run(
            [_bin('tempest'), 'run', '--regex', regex,
             '--concurrency', str(concurrency), '--subunit'],
            env=env, cwd=cloud, stdout=out, stderr=subprocess.DEVNULL,
            check=False, timeout=timeout)
    return parse_subunit(stream)


def write_second_store(state: glance.StateDir) -> None:
    """A second file store (``fs2``): the copy-image and multistore
    tests skip or wait out their timeout with one store."""
    os.makedirs(state.config_dir, exist_ok=True)
    os.makedirs(state.store_dir('images2'), exist_ok=True)
    with open(os.path.join(state.config_dir, 'stores.conf'), 'w',
              encoding='utf-8') as stream:
        stream.write('[DEFAULT]\nenabled_backends = fs:file, fs2:file\n\n'
                     f"[fs2]\nfilesystem_store_datadir = "
                     f"{state.store_dir('images2')}\n")


def load_metadefs(state: glance.StateDir) -> None:
    """Glance's stock metadata definitions, as deployments load them
    (the metadefs tests expect resource types)."""
    source = os.path.join(sys.prefix, 'etc', 'glance', 'metadefs')
    if not os.path.isdir(source):
        raise server.ServerError(f'{source} not found: install '
                                 'glance==33.0.0 in this environment')
    subprocess.run(
        [_bin('glance-manage'), *state.config_args(), 'db_load_metadefs',
         source], check=True, capture_output=True, timeout=300,
        stdin=subprocess.DEVNULL)


def write_policy(state: glance.StateDir) -> None:
    """The stack's location rules as Glance's own, in Glance's file."""
    os.makedirs(state.path, exist_ok=True)
    with open(state.policy_file, 'w', encoding='utf-8') as stream:
        stream.write('# instance-aware: location decisions as Glance '
                     "33's defaults make them.\n")
        for name, check in GLANCE_LOCATION_RULES.items():
            stream.write(f'"{name}": "{check}"\n')


@contextlib.contextmanager
def cloud(state_dir: str, max_lifetime: float = 3600
          ) -> Iterator[tuple[keystone.Directory, str, str]]:
    """Keystone and both Glance servers; the accounts and both URLs."""
    with keystone.KeystoneServer(os.path.join(state_dir, 'keystone'),
                                 max_lifetime=max_lifetime) as ks:
        directory = keystone.provision(ks)
        bare = server.GlanceServer(
            os.path.join(state_dir, 'glance-bare'), bare=True,
            flavor=glance.KEYSTONE, auth_url=ks.url,
            max_lifetime=max_lifetime, access_log=False)
        stacked = server.GlanceServer(
            os.path.join(state_dir, 'glance-stack'), bare=False,
            flavor=glance.KEYSTONE, auth_url=ks.url,
            max_lifetime=max_lifetime, access_log=False)
        write_policy(stacked.state)
        for each in (bare, stacked):
            keystone.configure_glance(each.state, directory)
            write_second_store(each.state)
        with bare, stacked:
            for each in (bare, stacked):
                load_metadefs(each.state)
            keystone.register_image_endpoints(directory, stacked.url,
                                              bare.bare_url)
            yield directory, bare.bare_url, stacked.url


def compare(state_dir: str, regex: str = FULL, concurrency: int = 1,
            echo: Any = None) -> Comparison:
    """Run ``regex`` bare, then with the stack; both outcomes."""
    state_dir = os.path.abspath(state_dir)
    say = echo or (lambda _message: None)
    with cloud(state_dir) as (directory, bare_url, stack_url):
        say(f'Keystone {directory.auth_url}, bare Glance {bare_url}, '
            f'Glance with the stack {stack_url}')
        outcomes = {}
        for name, region in (('bare', keystone.BARE_REGION),
                             ('stack', keystone.REGION)):
            began = time.monotonic()
            say(f'tempest run on {name} Glance...')
            outcomes[name] = run_tempest(
                os.path.join(state_dir, f'tempest-{name}'), directory,
                region, regex, concurrency)
            say(f'{name}: {outcomes[name].counts()} in '
                f'{time.monotonic() - began:.0f} s')
    return Comparison(outcomes['bare'], outcomes['stack'])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='tools/tempest',
        description='Run Tempest image tests on bare Glance and with the '
                    'stack; exit 1 if a test passing bare fails with the '
                    'stack.')
    parser.add_argument('--regex', default=FULL,
                        help='tests to run (default: %(default)s)')
    parser.add_argument('--subset', action='store_const', dest='regex',
                        const=SUBSET, help='the CI subset: images, '
                        'members, tags, import, locations')
    parser.add_argument('--state-dir', default='.state/tempest',
                        help='servers and workspaces (default: '
                             '%(default)s, emptied first)')
    parser.add_argument('--concurrency', type=int, default=1,
                        help='tempest workers (SQLite: keep 1)')
    args = parser.parse_args(argv)
    shutil.rmtree(args.state_dir, ignore_errors=True)
    comparison = compare(args.state_dir, args.regex, args.concurrency,
                         echo=lambda message: print(message, flush=True))
    print(comparison.report())
    if not comparison.bare.passed:
        print(f'no test passed on bare Glance: nothing was compared (see '
              f'{args.state_dir}/tempest-bare/cloud/logs)', file=sys.stderr)
        return 1
    return 1 if comparison.regressions else 0


if __name__ == '__main__':
    sys.exit(main())
