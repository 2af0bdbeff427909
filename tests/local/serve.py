"""``./tools/dev serve``: a real Glance with the stack on 127.0.0.1.

Why this is one module: the options, their checks and the run they drive
(servers started, usage printed, signals) are one command.

::

    ./tools/dev serve [--port 9292] [--bare-port N | --upstream URL]
                      [--state-dir .state/serve]
                      [--flavor keystone|noauth] [--auth-url URL]
                      [--keystone-port 5000]
                      [--workers 1] [--threads 4] [--max-lifetime S]

(``python -m tests.local serve`` from the checkout, in ``.venv``.)

``serve``
    Run a real Glance 33 with the instance-aware stack in its pipeline on
    127.0.0.1 until Ctrl-C or SIGTERM (exit 0).  ``--bare-port`` also
    serves the same Glance without the stack.  The ``keystone`` flavor
    (the default) checks tokens; without ``--auth-url`` it starts a local
    Keystone too and prints the ``OS_*`` variables of its accounts
    (:mod:`tests.local.clients`).  The ``noauth`` flavor trusts
    identity headers: never expose it.
``serve --upstream URL``
    Standalone mode: run only the stack, on 127.0.0.1, forwarding to the
    unmodified Glance at ``URL`` (:mod:`instance_aware.proxy`); its
    mapping database is SQLite in the state directory (default
    ``.state/standalone``); its flavor defaults to ``noauth``.

Exit codes: 0 stopped on request; 1 the server failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from types import FrameType
from typing import Any

from instance_aware import version
from tests.local import clients, glance, keystone, server

PROG = 'tools/dev'
STATE_DIR = '.state/serve'
STANDALONE_STATE_DIR = '.state/standalone'


class _Stop(Exception):
    """Raised in the main thread by SIGTERM or SIGINT (see below)."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM and SIGINT interrupt the wait (main thread only).

    SIGINT is handled explicitly too: a shell without job control starts
    background commands with SIGINT ignored, and Python then leaves it
    ignored, so ``kill -INT`` (what Ctrl-C sends) would not stop a server
    started that way.  Handlers are restored on exit, so :func:`main` can
    run in tests.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python
                signal.signal(signum, handler)


def _ignore_stop_signals() -> None:
    """A second Ctrl-C must not interrupt the graceful stop."""
    if threading.current_thread() is threading.main_thread():
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def _noauth_usage(url: str, standalone: bool = False) -> str:
    who = ('the stack trusts the identity headers of every request and '
           'forwards them:\nthe Glance behind it must trust them too.'
           if standalone else
           'Glance trusts the identity headers of every request.')
    return f"""\
Flavor noauth: {who}
Act as user alice, member of project demo:

  curl -s {url}/v2/images \\
      -H 'X-Identity-Status: Confirmed' -H 'X-Project-Id: demo' \\
      -H 'X-User-Id: alice' -H 'X-Roles: reader,member'

From Python in the clone (glanceclient or openstacksdk):

  import glanceclient
  from tests.local.identity import session_for
  session = session_for('demo', roles=('reader', 'member'), user='alice')
  glance = glanceclient.Client('2', session=session,
                               endpoint_override='{url}')
  print([image.name for image in glance.images.list()])

(glanceclient's own identity_headers= percent-encodes the comma of
X-Roles; the session above sends the headers untouched.)"""


def _keystone_usage(url: str, state: glance.StateDir) -> str:
    return f"""\
Flavor keystone: tokens are checked by keystonemiddleware.
[keystone_authtoken] in {state.config_file} has placeholders for
Glance's service user (username glance, project service, password
GLANCE_SERVICE_PASSWORD): put the real values in
{state.config_dir}/auth.conf (kept across restarts) and restart.

  glance --os-image-url {url} image-list     # with your OS_* variables
  OS_IMAGE_ENDPOINT_OVERRIDE={url} openstack image list"""


def usage_message(srv: server.GlanceServer,
                  directory: keystone.Directory | None = None) -> str:
    """What ``serve`` prints once the server answers (``directory``:
    the accounts of a local Keystone)."""
    if isinstance(srv, server.StandaloneServer):
        lines = [f'The instance-aware stack:           {srv.url}',
                 f'in front of the Glance at:          {srv.upstream}']
    else:
        lines = [f'Glance with the instance-aware stack: {srv.url}']
    if srv.bare_port is not None:
        lines.append(f'Same Glance without the stack:      {srv.bare_url}')
    lines += [f'State directory: {srv.state_dir}',
              f'Log:             {srv.log_file}', '']
    if directory is not None:
        lines.append(clients.usage(directory, srv.state_dir,
                                   srv.bare_port is not None))
    elif srv.flavor == glance.KEYSTONE:
        lines.append(_keystone_usage(srv.url, srv.state))
    else:
        lines.append(_noauth_usage(
            srv.url, isinstance(srv, server.StandaloneServer)))
    lines += ['', 'Ctrl-C stops the server.']
    return '\n'.join(lines)


def _flavor(args: argparse.Namespace) -> str:
    """``--flavor``, or its default: noauth with ``--upstream``."""
    if args.flavor:
        return str(args.flavor)
    return glance.NOAUTH if args.upstream else glance.KEYSTONE


def _local_keystone(args: argparse.Namespace
                    ) -> keystone.KeystoneServer | None:
    """The Keystone to start beside Glance, if serve starts one."""
    if _flavor(args) != glance.KEYSTONE or args.auth_url or args.upstream:
        return None
    return keystone.KeystoneServer(
        os.path.join(args.state_dir or STATE_DIR, 'keystone'),
        port=args.keystone_port, max_lifetime=args.max_lifetime,
        debug=args.debug)


def _server(args: argparse.Namespace,
            local_keystone: keystone.KeystoneServer | None = None
            ) -> server.GlanceServer:
    auth_url = args.auth_url
    if local_keystone is not None:
        auth_url = f'http://{server.HOST}:{args.keystone_port}/v3'
    common: dict[str, Any] = {
        'port': args.port, 'workers': args.workers, 'threads': args.threads,
        'flavor': _flavor(args), 'auth_url': auth_url,
        'max_lifetime': args.max_lifetime, 'debug': args.debug}
    if args.upstream:
        return server.StandaloneServer(
            args.state_dir or STANDALONE_STATE_DIR, args.upstream, **common)
    return server.GlanceServer(
        args.state_dir or STATE_DIR, bare=args.bare_port is not None,
        bare_port=args.bare_port, **common)


def _upstream_warning(srv: server.GlanceServer) -> str | None:
    if not isinstance(srv, server.StandaloneServer):
        return None
    status = srv.upstream_status()
    if status in (502, 504):
        return (f'Warning: the Glance at {srv.upstream} does not answer '
                f'yet ({status} through the stack); see {srv.log_file}')
    return None


def _start_keystone(ks: keystone.KeystoneServer,
                    srv: server.GlanceServer) -> keystone.Directory:
    """Start and provision the local Keystone; Glance's service user."""
    print(f'Preparing {ks.state.path} and starting Keystone...', flush=True)
    ks.start()
    directory = keystone.provision(ks)
    keystone.configure_glance(srv.state, directory)
    return directory


def _publish(directory: keystone.Directory,
             srv: server.GlanceServer) -> None:
    """Glance in the catalog, the openrc files in the state directory."""
    bare = srv.bare_url if srv.bare_port is not None else None
    keystone.register_image_endpoints(directory, srv.url, bare)
    clients.write_openrc(srv.state_dir, directory, bare is not None)


def _stop_all(srv: server.GlanceServer,
              ks: keystone.KeystoneServer | None) -> int | None:
    """Stop Glance, then Keystone; Glance's exit code."""
    code = srv.stop()
    if ks is not None:
        ks.stop()
    return code


def serve(args: argparse.Namespace) -> int:
    """Start the server, tell how to use it, wait for Ctrl-C or SIGTERM."""
    ks = _local_keystone(args)
    srv = _server(args, ks)
    what = ('the stack' if isinstance(srv, server.StandaloneServer)
            else 'Glance')
    with _stop_signals():
        try:
            directory = None if ks is None else _start_keystone(ks, srv)
            print(f'Preparing {srv.state_dir} and starting {what}...',
                  flush=True)
            srv.start()
            if directory is not None:
                _publish(directory, srv)
            print(usage_message(srv, directory), flush=True)
            warning = _upstream_warning(srv)
            if warning:
                print(warning, file=sys.stderr, flush=True)
            while srv.running and (ks is None or ks.running):
                time.sleep(0.5)
        except (KeyboardInterrupt, _Stop):
            _ignore_stop_signals()
            _stop_all(srv, ks)
            print('Stopped.', flush=True)
            return 0
        except (server.ServerError, glance.SetupError) as exc:
            _stop_all(srv, ks)
            print(f'{PROG}: error: {exc}', file=sys.stderr)
            return 1
    if ks is not None and not ks.running and srv.running:
        _stop_all(srv, ks)
        print(f'{PROG}: error: Keystone exited by itself; see '
              f'{ks.log_file}', file=sys.stderr)
        return 1
    code = _stop_all(srv, ks)
    if code == 0 and args.max_lifetime:
        print(f'Stopped after --max-lifetime {args.max_lifetime:g} s.')
        return 0
    print(f'{PROG}: error: the server exited by itself (code {code}); see '
          f'{srv.log_file}', file=sys.stderr)
    return 1


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f'{value} is not a TCP port')
    return port


def _upstream(value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise argparse.ArgumentTypeError(
            f'{value} is not an http:// or https:// URL')
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'{value}: {exc}') from None
    return value


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f'{value} is not at least 1')
    return number


def build_parser() -> argparse.ArgumentParser:
    """The parser, one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Developer tools of instance-aware.')
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {version.version_string()}')
    commands = parser.add_subparsers(dest='command', required=True,
                                     title='Commands')
    run = commands.add_parser(
        'serve', help='run a real Glance with the stack on 127.0.0.1',
        description='Run Glance 33 with the instance-aware stack on '
                    '127.0.0.1 until Ctrl-C or SIGTERM; with --upstream, '
                    'only the stack, in front of that Glance.')
    run.add_argument('--port', type=_port, default=9292,
                     help='port of the stacked pipeline '
                          '(default: %(default)s)')
    run.add_argument('--bare-port', type=_port, default=None,
                     help='also serve the same Glance without the stack '
                          'on this port (default: do not)')
    run.add_argument('--upstream', type=_upstream, metavar='URL',
                     help='standalone mode: run only the stack, in front '
                          'of the Glance API at URL (default: run a '
                          'local Glance)')
    run.add_argument('--state-dir', default=None,
                     help='configuration, databases, images and log '
                          f'(default: {STATE_DIR}, with --upstream '
                          f'{STANDALONE_STATE_DIR})')
    run.add_argument('--flavor', choices=glance.FLAVORS, default=None,
                     help='keystone checks tokens (of a local Keystone '
                          'unless --auth-url); noauth trusts identity '
                          'headers (default: keystone; noauth with '
                          '--upstream)')
    run.add_argument('--auth-url',
                     help='an existing Keystone for the keystone flavor '
                          '(default: start a local one)')
    run.add_argument('--keystone-port', type=_port, default=5000,
                     help='port of the local Keystone (default: '
                          '%(default)s)')
    run.add_argument('--workers', type=_positive, default=1,
                     help='gunicorn worker processes (default: '
                          '%(default)s)')
    run.add_argument('--threads', type=_positive, default=4,
                     help='threads per worker (default: %(default)s)')
    run.add_argument('--max-lifetime', type=float, default=None,
                     metavar='SECONDS',
                     help='stop by itself after this long (default: never)')
    run.add_argument('--debug', action='store_true',
                     help="Glance's debug logging")
    run.set_defaults(run=serve)
    return parser


def _check(parser: argparse.ArgumentParser, args: Any) -> None:
    if args.command != 'serve':
        return
    if args.upstream and args.flavor == glance.KEYSTONE and (
            not args.auth_url):
        parser.error('--flavor keystone with --upstream needs --auth-url')
    if _flavor(args) == glance.NOAUTH and args.auth_url:
        parser.error('--auth-url is only for --flavor keystone')
    if _local_keystone(args) is not None and args.keystone_port in (
            args.port, args.bare_port):
        parser.error('--keystone-port must differ from the Glance ports')
    if args.bare_port is not None and args.bare_port == args.port:
        parser.error('--bare-port must differ from --port')
    if args.upstream and args.bare_port is not None:
        parser.error('--bare-port needs a local Glance: not with '
                     '--upstream')


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code is returned, never raised."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check(parser, args)
    except SystemExit as exc:  # --help (0) or bad usage (2)
        return exc.code if isinstance(exc.code, int) else 2
    code: int = args.run(args)
    return code


if __name__ == '__main__':
    sys.exit(main())
