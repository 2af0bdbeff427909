# Sphinx configuration of the instance-aware documentation.
#
# Build (warnings are errors, as ``./tools/dev test`` does):
#
#   sphinx-build -q -W --keep-going -b html doc/source doc/build/html
#
# The configuration and policy references are generated from the code
# (entry points ``oslo.config.opts`` and ``oslo.policy.policies``, namespace
# ``instance_aware``), so the package must be importable.

from __future__ import annotations

import subprocess
from importlib import metadata

# -- Project -----------------------------------------------------------------

project = 'instance-aware'
copyright = 'instance-aware developers'
author = 'instance-aware developers'

try:
    release = metadata.version('instance-aware')
except metadata.PackageNotFoundError:  # a source tree that is not installed
    release = ''
version = release


def _in_git_checkout() -> bool:
    """Whether ``git rev-parse HEAD`` works here, as openstackdocstheme needs.

    The theme runs it at every build and logs a *warning* when it fails (an
    unpacked sdist, a checkout git refuses for "dubious ownership"), which
    ``-W`` turns into a failed build.  No setting avoids that, so such
    builds use Sphinx's builtin theme instead.
    """
    try:
        subprocess.run(['git', 'rev-parse', 'HEAD'], check=True,  # noqa: S607
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


USE_OPENSTACKDOCSTHEME = _in_git_checkout()

# -- General -----------------------------------------------------------------

extensions = [
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'oslo_policy.sphinxext',
    'oslo_policy.sphinxpolicygen',
]
if USE_OPENSTACKDOCSTHEME:
    extensions.append('openstackdocstheme')

root_doc = 'index'
source_suffix = {'.rst': 'restructuredtext'}
# The generated samples are included by pages, not pages themselves.
exclude_patterns = ['_static']
language = 'en'
pygments_style = 'native'

# oslo.config: the sample configuration file, written at every build to
# _static/instance-aware.conf.sample.
config_generator_config_file = '_config-generator.conf'
sample_config_basename = '_static/instance-aware'

# oslo.policy: the sample policy file, written at every build to
# _static/instance-aware.policy.yaml.sample.
policy_generator_config_file = '_policy-generator.conf'
sample_policy_basename = '_static/instance-aware'

# -- HTML --------------------------------------------------------------------

html_title = f'instance-aware {release}'.strip()
html_show_sourcelink = False

if USE_OPENSTACKDOCSTHEME:
    html_theme = 'openstackdocs'
    # Set explicitly, so the theme derives nothing from setup.cfg or pbr
    # (which would call git, and warn when that fails) and links to no
    # repository or bug tracker.
    openstackdocs_repo_name = ''
    openstackdocs_bug_project = ''
    openstackdocs_bug_tag = ''
    openstackdocs_use_storyboard = False
    openstackdocs_auto_name = False
    openstackdocs_auto_version = False
    openstackdocs_pdf_link = False
    html_theme_options = {
        'display_badge': False,
        'show_other_versions': False,
        # No OpenStack Google Analytics tag in this project's pages.
        'analytics_tracking_code': '',
    }
else:
    html_theme = 'alabaster'
