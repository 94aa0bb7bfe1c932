"""A throwaway PostgreSQL cluster in a directory: for tests, benchmarks and ``make demo``.

``start(datadir)`` creates the cluster on first use (``initdb``), starts it on a free
TCP port on 127.0.0.1 and returns a DSN; ``stop(datadir)`` stops it; ``restart`` does
both. When running as root the server runs as the ``postgres`` user (PostgreSQL refuses
root), so the directory is handed to that user. Durability settings are off: this
cluster holds nothing worth an fsync. When the timescaledb extension is installed for
these binaries, the cluster preloads it (``CREATE EXTENSION`` fails FATAL otherwise) with
telemetry off, and says so on stderr.

    python -m scripts.pgserver start|stop|restart|status DIR
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

PG_USER = "postgres"  # the unprivileged user a root caller runs the server as
START_TIMEOUT_S = 60  # pg_ctl -w wait; a cold start on a slow CI disk takes seconds
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. Install them: "
    "Debian/Ubuntu `apt-get install postgresql`, Fedora `dnf install postgresql-server`, "
    "macOS `brew install postgresql@15`; or put their directory on PATH, or set "
    "LOADER_TEST_DSN to an existing database for the tests."
)
# Throwaway cluster: skip every fsync, keep the log readable.
SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=50"
)
# An installed but not preloaded timescaledb fails CREATE EXTENSION with FATAL; and a
# server with telemetry on tries to reach the internet.
TIMESCALEDB_OPTIONS = "-c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"


class PgServerError(Exception):
    """The throwaway server could not be created, started or stopped."""


def find_bindir() -> Path:
    """The directory holding ``pg_ctl`` and ``initdb``; PgServerError when none is."""
    candidates = [shutil.which("pg_ctl")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    candidates += sorted(glob.glob("/usr/local/pgsql/bin/pg_ctl"))
    for found in candidates:
        if found and Path(found).with_name("initdb").exists():
            return Path(found).parent
    raise PgServerError(INSTALL_HINT)


def extension_dirs(bindir: Path) -> tuple[Path, Path]:
    """(pkglibdir, sharedir) of the PostgreSQL whose binaries are in ``bindir``."""
    postgres = bindir / "postgres"
    if postgres.exists():  # /usr/local/bin may hold symlinks into the real bindir
        bindir = postgres.resolve().parent
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        result = subprocess.run(
            [str(pg_config), "--pkglibdir", "--sharedir"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = result.stdout.split()
        if result.returncode == 0 and len(lines) == 2:
            return Path(lines[0]), Path(lines[1])
    # Debian's layout without pg_config: /usr/lib/postgresql/N/{bin,lib}, /usr/share/postgresql/N
    prefix = bindir.parent
    return prefix / "lib", Path("/usr/share/postgresql") / prefix.name


def timescaledb_installed(pkglibdir: Path, sharedir: Path) -> bool:
    """True when the timescaledb library and its control file are both there."""
    library = any(pkglibdir.glob("timescaledb*.so"))
    return library and (sharedir / "extension" / "timescaledb.control").exists()


def server_options(timescaledb: bool) -> str:
    """The options the throwaway server is started with."""
    return f"{SERVER_OPTIONS} {TIMESCALEDB_OPTIONS}" if timescaledb else SERVER_OPTIONS


def preloads_timescaledb() -> bool:
    """True when clusters started here preload timescaledb (it is installed)."""
    return timescaledb_installed(*extension_dirs(find_bindir()))


def start(datadir: Path | str) -> str:
    """Start (creating if needed) the cluster in ``datadir``; return its DSN."""
    datadir = Path(datadir).resolve()
    pgdata = datadir / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        _initdb(datadir, pgdata)
    if status(datadir):
        return dsn(datadir)
    port = _port(datadir)
    timescaledb = preloads_timescaledb()
    if timescaledb:
        print("pgserver: timescaledb is installed: preloading it, telemetry off", file=sys.stderr)
    options = f"-p {port} {server_options(timescaledb)}"
    _run(
        datadir,
        "pg_ctl",
        [
            *("-D", str(pgdata), "-l", str(datadir / "server.log")),
            *("-w", "-t", str(START_TIMEOUT_S), "-o", options, "start"),
        ],
        log=datadir / "server.log",
    )
    return dsn(datadir)


def stop(datadir: Path | str, mode: str = "fast") -> None:
    """Stop the server (``mode``: smart, fast or immediate); no-op when not running."""
    datadir = Path(datadir).resolve()
    if status(datadir):
        _run(datadir, "pg_ctl", ["-D", str(datadir / "pgdata"), "-m", mode, "-w", "stop"])


def restart(datadir: Path | str, mode: str = "fast") -> str:
    """Stop then start again on the same port (what a DBA's restart looks like)."""
    stop(datadir, mode)
    return start(datadir)


def status(datadir: Path | str) -> bool:
    """True when the server of ``datadir`` is running."""
    pgdata = Path(datadir).resolve() / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        return False
    result = subprocess.run(
        _command(Path(datadir), "pg_ctl", ["-D", str(pgdata), "status"]),
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def dsn(datadir: Path | str) -> str:
    """The DSN of the cluster in ``datadir`` (trust auth, superuser ``postgres``)."""
    port = _port(Path(datadir).resolve())
    return f"host=127.0.0.1 port={port} user={PG_USER} dbname=postgres"


def destroy(datadir: Path | str) -> None:
    """Stop the server immediately and delete ``datadir``."""
    try:
        stop(datadir, "immediate")
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def _initdb(datadir: Path, pgdata: Path) -> None:
    datadir.mkdir(parents=True, exist_ok=True)
    _hand_over(datadir)
    _run(
        datadir,
        "initdb",
        ["-D", str(pgdata), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"],
    )


def _port(datadir: Path) -> int:
    """A free port, chosen once per cluster and kept in ``datadir/port``."""
    path = datadir / "port"
    if path.exists():
        return int(path.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    path.write_text(f"{port}\n")
    return port


def _as_root() -> bool:
    return os.geteuid() == 0


def _hand_over(datadir: Path) -> None:
    """As root: give ``datadir`` to the server's user, who must be able to reach it."""
    if not _as_root():
        return
    try:
        user = pwd.getpwnam(PG_USER)
    except KeyError:
        raise PgServerError(
            f"running as root, but there is no '{PG_USER}' user to run PostgreSQL as "
            "(PostgreSQL refuses to run as root): create it (`useradd -r postgres`) "
            "or run as an ordinary user"
        ) from None
    os.chown(datadir, user.pw_uid, user.pw_gid)
    os.chmod(datadir, 0o700)


def _command(datadir: Path, program: str, args: list[str]) -> list[str]:
    command = [str(find_bindir() / program), *args]
    if _as_root():
        return ["runuser", "-u", PG_USER, "--", *command]
    return command


def _run(datadir: Path, program: str, args: list[str], log: Path | None = None) -> None:
    result = subprocess.run(
        _command(datadir, program, args), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        if log is not None and log.exists():
            detail += "\n--- server log (tail) ---\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-20:]
            )
        raise PgServerError(f"{program} failed (exit {result.returncode}) in {datadir}:\n{detail}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    actions = {"start", "stop", "restart", "status", "destroy"}
    if len(args) != 2 or args[0] not in actions:
        print("usage: python -m scripts.pgserver start|stop|restart|status|destroy DIR")
        return 2
    action, datadir = args
    try:
        if action in ("start", "restart"):
            print(start(datadir) if action == "start" else restart(datadir))
        elif action == "stop":
            stop(datadir)
        elif action == "destroy":
            destroy(datadir)
        else:
            running = status(datadir)
            print(f"running: {dsn(datadir)}" if running else "stopped")
            return 0 if running else 3
    except PgServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
