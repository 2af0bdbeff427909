"""instance-aware: Paste WSGI filters that make Glance images instance-aware.

The package is laid out by layer:

* :mod:`instance_aware.filters`: the paste filters;
* :mod:`instance_aware.api`: the instance query API;
* :mod:`instance_aware.store`: models, queries, migrations;
* :mod:`instance_aware.policies`: oslo.policy rules;
* :mod:`instance_aware.keys`: the key lifecycle;
* :mod:`instance_aware.cmd`: the command line.
"""
