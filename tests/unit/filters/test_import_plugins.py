"""Reading Glance's import plugins whether or not Glance registered them."""

from __future__ import annotations

import pathlib

import pytest
from oslo_config import cfg

from instance_aware.integrity import import_plugins


def _loaded(tmp_path: pathlib.Path, text: str) -> cfg.ConfigOpts:
    path = tmp_path / 'glance-api.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(path)], project='glance')
    return conf


@pytest.mark.parametrize(('text', 'expected'), [
    pytest.param('', [], id='not-set'),
    pytest.param("[image_import_opts]\nimage_import_plugins = "
                 "['image_decompression', 'no_op']\n",
                 ['image_decompression', 'no_op'], id='set'),
    pytest.param('[image_import_opts]\nimage_import_plugins = []\n', [],
                 id='empty'),
])
def test_read_from_the_service_files(tmp_path: pathlib.Path, text: str,
                                     expected: list[str]) -> None:
    conf = _loaded(tmp_path, text)
    assert import_plugins.configured(conf) == expected
    # The service's configuration object is left as it was.
    with pytest.raises(cfg.NoSuchOptError):
        conf['image_import_opts']


def test_registered_option_wins(tmp_path: pathlib.Path) -> None:
    conf = _loaded(tmp_path, '')
    conf.register_opt(import_plugins.glance_option(),
                      group=import_plugins.GROUP)
    conf.set_override(import_plugins.OPTION, ['image_conversion'],
                      group=import_plugins.GROUP)
    assert import_plugins.rewriting(conf) == ['image_conversion']


def test_unreadable_value_is_unknown(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = _loaded(tmp_path, '[image_import_opts]\n'
                             'image_import_plugins = no brackets\n')
    assert import_plugins.configured(conf) is None
    assert import_plugins.rewriting(conf) == []
    assert 'image_import_plugins could not be read' in caplog.text


def test_never_loaded_is_unknown() -> None:
    assert import_plugins.configured(cfg.ConfigOpts()) is None


@pytest.mark.parametrize(('plugins', 'conversion', 'expected'), [
    pytest.param(['no_op', 'inject_image_metadata'], False, [],
                 id='keeping-plugins'),
    pytest.param(['inject_image_metadata', 'image_conversion'], False,
                 ['image_conversion'], id='conversion'),
    pytest.param(['my_plugin'], False, ['my_plugin'], id='unknown-plugin'),
    pytest.param([], True, ['image_conversion'],
                 id='image_conversion_enabled'),
])
def test_rewriting(tmp_path: pathlib.Path, plugins: list[str],
                   conversion: bool, expected: list[str]) -> None:
    listed = ', '.join(repr(name) for name in plugins)
    conf = _loaded(tmp_path, '[image_import_opts]\n'
                             f'image_import_plugins = [{listed}]\n')
    assert import_plugins.rewriting(conf, conversion) == expected
