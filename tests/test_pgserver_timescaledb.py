"""scripts/pgserver.py on a host with timescaledb installed: preload it, telemetry off."""

from pathlib import Path

from scripts import pgserver


def _install(root: Path, *, library: bool, control: bool) -> tuple[Path, Path]:
    lib, share = root / "lib", root / "share"
    (share / "extension").mkdir(parents=True)
    lib.mkdir()
    if library:
        (lib / "timescaledb-2.28.3.so").write_bytes(b"")
    if control:
        (share / "extension" / "timescaledb.control").write_text("default_version = '2.28.3'\n")
    return lib, share


def test_timescaledb_counts_as_installed_with_library_and_control_file(tmp_path: Path) -> None:
    assert pgserver.timescaledb_installed(*_install(tmp_path, library=True, control=True))


def test_timescaledb_half_installed_counts_as_missing(tmp_path: Path) -> None:
    assert not pgserver.timescaledb_installed(
        *_install(tmp_path / "a", library=True, control=False)
    )
    assert not pgserver.timescaledb_installed(
        *_install(tmp_path / "b", library=False, control=True)
    )


def test_server_options_preload_timescaledb_with_telemetry_off_only_when_installed() -> None:
    options = pgserver.server_options(timescaledb=True)
    assert "shared_preload_libraries=timescaledb" in options
    assert "timescaledb.telemetry_level=off" in options
    assert options.startswith(pgserver.SERVER_OPTIONS)
    assert pgserver.server_options(timescaledb=False) == pgserver.SERVER_OPTIONS


def test_extension_dirs_without_pg_config_follow_debian_layout(tmp_path: Path) -> None:
    bindir = tmp_path / "15" / "bin"
    bindir.mkdir(parents=True)
    assert pgserver.extension_dirs(bindir) == (
        tmp_path / "15" / "lib",
        Path("/usr/share/postgresql/15"),
    )


def test_extension_dirs_of_the_system_postgresql_exist() -> None:
    pkglibdir, sharedir = pgserver.extension_dirs(pgserver.find_bindir())
    assert pkglibdir.is_dir() and (sharedir / "extension").is_dir()
