"""The standard clients against a local Glance and its local Keystone.

``./tools/dev serve`` (keystone flavor, no ``--auth-url``) starts a
Keystone next to Glance (:mod:`tests.local.keystone`) and prints
what this module writes: the ``OS_*`` variables with which
``openstack``, ``glance`` and openstacksdk work as each local account,
the same written to ``openrc/<user>`` files in the state directory
(``openrc/<user>-bare`` for the Glance without the stack), and how to
call as Nova does (the user's token plus Nova's service token).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping

from tests.local import keystone

#: Accounts shown by :func:`usage`, with what they are.
ACCOUNTS = {
    keystone.ADMIN: 'cloud administrator (project admin)',
    **{f'{project}-{role}': f'{role} of project {project}'
       for project in keystone.PROJECTS for role in ('member', 'reader')},
    keystone.NOVA_USER: "Nova's service user (project service, role "
                        'service)',
}


def export_line(environ: Mapping[str, str]) -> str:
    """One ``export`` command setting ``environ`` (shell-quoted)."""
    return 'export ' + ' '.join(f'{key}={shlex.quote(value)}'
                                for key, value in environ.items())


def openrc_dir(state_dir: str) -> str:
    return os.path.join(state_dir, 'openrc')


def write_openrc(state_dir: str, directory: keystone.Directory,
                 bare: bool) -> str:
    """``openrc/<user>`` (and ``<user>-bare``) files; their directory."""
    target = openrc_dir(state_dir)
    os.makedirs(target, mode=0o700, exist_ok=True)
    regions = {'': keystone.REGION}
    if bare:
        regions['-bare'] = keystone.BARE_REGION
    for username in ACCOUNTS:
        account = directory[username]
        for suffix, region in regions.items():
            path = os.path.join(target, f'{username}{suffix}')
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w', encoding='utf-8') as stream:
                stream.write(export_line(
                    account.environ(directory.auth_url, region)) + '\n')
    return target


def _nova_snippet(directory: keystone.Directory, region: str) -> str:
    user = directory[f'{keystone.PROJECTS[0]}-member']
    nova = directory.nova
    return f"""\
python3 - <<'EOF'
import openstack
from keystoneauth1 import service_token, session
from keystoneauth1.identity import v3

def password(username, project):
    return v3.Password(
        auth_url='{directory.auth_url}', username=username,
        password='{user.password}', project_name=project,
        user_domain_name='Default', project_domain_name='Default')

auth = service_token.ServiceTokenAuthWrapper(
    password('{user.username}', '{user.project}'),
    password('{nova.username}', '{nova.project}'))
cloud = openstack.connection.Connection(
    session=session.Session(auth=auth), region_name='{region}')
print([image.name for image in cloud.image.images()])
EOF"""


def usage(directory: keystone.Directory, state_dir: str,
          bare: bool) -> str:
    """What ``serve`` prints for the keystone flavor with a local
    Keystone."""
    admin = directory.admin
    files = openrc_dir(state_dir)
    lines = [
        f'Keystone (local, fernet tokens):     {directory.auth_url}',
        '',
        'As admin, through the stack (openstack, glance, openstacksdk '
        'read these):',
        '',
        '  ' + export_line(admin.environ(directory.auth_url)),
        '  openstack image list',
        '  glance image-list',
        '',
        'Other accounts (same password): set OS_USERNAME and '
        'OS_PROJECT_NAME:',
    ]
    for username, what in ACCOUNTS.items():
        account = directory[username]
        lines.append(f'  OS_USERNAME={username:<13} '
                     f'OS_PROJECT_NAME={account.project:<8} {what}')
    if bare:
        lines += ['',
                  f'The same Glance without the stack: '
                  f'OS_REGION_NAME={keystone.BARE_REGION}.']
    lines += [
        '',
        f'Each set is in {files}/<user>'
        + (' and <user>-bare' if bare else '') + ' (source it).',
        '',
        'As Nova acting for a user (user token plus X-Service-Token):',
        '',
        _nova_snippet(directory, keystone.REGION),
    ]
    return '\n'.join(lines)
