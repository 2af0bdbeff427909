"""Tests; a package so that shared helpers (``tests.dbbackends``) import."""
