"""``instance-aware-status upgrade check`` on every database backend."""

from __future__ import annotations

import json
import pathlib

import pytest
from sqlalchemy.engine import make_url

from instance_aware.cmd import manage, status
from instance_aware.store import migration


def test_schema_check_follows_db_sync(
        db_url: str, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / 'glance-api.conf'
    config.write_text(f'[instance_aware]\nconnection = {db_url}\n'
                      '[instance_aware_keys]\nenabled = false\n',
                      encoding='utf-8')
    argv = ['--config-file', str(config)]
    shown = make_url(db_url).render_as_string()
    head = migration.head()

    def schema() -> tuple[int, list[object]]:
        code = status.main([*argv, 'upgrade', 'check', '--json'])
        checks = json.loads(capsys.readouterr().out)['checks']
        return code, [checks[0]['result'], checks[0]['details']]

    assert schema() == (2, [2, f'{shown} is at revision None, the package '
                               f"ships {head}: run 'instance-aware-manage "
                               "db sync'."])
    assert manage.main([*argv, 'db', 'sync']) == 0
    capsys.readouterr()
    assert schema() == (0, [0, f'{shown} is at revision {head}.'])
