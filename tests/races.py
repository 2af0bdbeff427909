"""Make writes of the mapping database lose races, on purpose.

Real deadlocks depend on timing.  :class:`Injector` installs a trigger on
``ia_images`` that fails chosen row writes with the server's own error
(PostgreSQL SQLSTATE ``40P01``, ``40001``, ``55P03``; MySQL/MariaDB error
1213 or 1205), so the driver, the error mapping and the retry see
exactly what a lost race gives them.  Attempts are counted in a sequence:
sequences are not rolled back with the transaction that failed.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from tests.dbbackends import POSTGRESQL

#: PostgreSQL deadlock_detected, MySQL ER_LOCK_DEADLOCK.
DEADLOCK = {POSTGRESQL: '40P01', 'mysql': '1213'}


@dataclasses.dataclass(frozen=True)
class Race:
    """A server error that breaks a race."""

    backend: str
    #: PostgreSQL: the SQLSTATE; MySQL: the error number.
    code: str


class Injector:
    """Fails chosen writes of ``ia_images`` rows with ``race``."""

    def __init__(self, engine: sa.Engine, race: Race) -> None:
        self.engine = engine
        self.race = race

    def arm(self, *, first: int | None = None,
            every: int | None = None) -> None:
        """Fail the ``first`` next row writes, or every ``every``-th."""
        if (first is None) == (every is None):
            raise ValueError('give first or every')
        fails = (f'n <= {first}' if first is not None
                 else f'MOD(n, {every}) = 0')
        with self.engine.begin() as conn:
            if self.race.backend == POSTGRESQL:
                conn.exec_driver_sql('CREATE SEQUENCE ia_test_attempts')
                conn.exec_driver_sql(f"""
                    CREATE FUNCTION ia_test_race() RETURNS trigger AS $$
                    DECLARE n bigint := nextval('ia_test_attempts');
                    BEGIN
                      IF {fails} THEN
                        RAISE EXCEPTION 'lost race (injected)'
                          USING ERRCODE = '{self.race.code}';
                      END IF;
                      RETURN NEW;
                    END $$ LANGUAGE plpgsql""")
                conn.exec_driver_sql(
                    'CREATE TRIGGER ia_test_race BEFORE INSERT OR UPDATE '
                    'ON ia_images FOR EACH ROW '
                    'EXECUTE FUNCTION ia_test_race()')
                return
            state = '40001' if self.race.code == '1213' else 'HY000'
            conn.exec_driver_sql('CREATE SEQUENCE ia_test_attempts NOCACHE')
            for event in ('INSERT', 'UPDATE'):
                conn.exec_driver_sql(f"""
                    CREATE TRIGGER ia_test_race_{event.lower()}
                    BEFORE {event} ON ia_images FOR EACH ROW
                    BEGIN
                      DECLARE n BIGINT DEFAULT NEXTVAL(ia_test_attempts);
                      IF {fails} THEN
                        SIGNAL SQLSTATE '{state}'
                          SET MYSQL_ERRNO = {self.race.code},
                              MESSAGE_TEXT = 'lost race (injected)';
                      END IF;
                    END""")

    def attempts(self) -> int:
        """Row writes tried since :meth:`arm` (it takes a number too)."""
        query = ("SELECT nextval('ia_test_attempts')"
                 if self.race.backend == POSTGRESQL
                 else 'SELECT NEXTVAL(ia_test_attempts)')
        with self.engine.begin() as conn:
            return int(conn.exec_driver_sql(query).scalar_one()) - 1

    def disarm(self) -> None:
        """Remove the trigger and its sequence."""
        with self.engine.begin() as conn:
            if self.race.backend == POSTGRESQL:
                conn.exec_driver_sql(
                    'DROP TRIGGER IF EXISTS ia_test_race ON ia_images')
                conn.exec_driver_sql('DROP FUNCTION IF EXISTS ia_test_race')
            else:
                for event in ('insert', 'update'):
                    conn.exec_driver_sql(
                        f'DROP TRIGGER IF EXISTS ia_test_race_{event}')
            conn.exec_driver_sql('DROP SEQUENCE IF EXISTS ia_test_attempts')
