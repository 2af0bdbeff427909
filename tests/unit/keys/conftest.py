"""Database fixtures: every backend, a new empty database per test."""

from __future__ import annotations

from tests.dbbackends import db_engine, db_url, migrated_engine

__all__ = ['db_engine', 'db_url', 'migrated_engine']
